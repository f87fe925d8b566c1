'use strict';

// The triggers' shared JavaScript on its own (node --test schemas/clients/). The packages'
// suites test their generated copies through the Zapier triggers and the n8n trigger node.

const test = require('node:test');
const assert = require('node:assert');
const events = require('./relay-events');

const deposit = (data = {}) => ({
  id: 'evt_1',
  type: 'paywall.balance.deposit.created',
  version: '1',
  createdAt: '2026-11-30T16:00:00Z',
  data: { externalUserId: 'acme:u1', amount: '5', ...data },
});

test('every trigger has a label, event types, a sample of one of its types, and unique keys', () => {
  const zapierKeys = new Set();
  const n8nValues = new Set();
  for (const [name, spec] of Object.entries(events.EVENTS.triggers)) {
    assert.ok(spec.label && spec.description, name);
    assert.ok(spec.event_types.length > 0, name);
    assert.ok(events.matches(name, spec.sample), `${name}: its sample is an event it fires on`);
    assert.equal(spec.sample.user, events.userOf(spec.sample), `${name}: sample.user is userOf(sample)`);
    assert.equal(spec.outputs[0].path, 'id', `${name}: the first output is the event id`);
    if (spec.zapier) {
      assert.ok(!zapierKeys.has(spec.zapier.key));
      zapierKeys.add(spec.zapier.key);
    }
    assert.ok(!n8nValues.has(spec.n8n.value));
    n8nValues.add(spec.n8n.value);
  }
});

test('hookBody: target, the trigger types, and a trimmed user filter only when given', () => {
  assert.deepStrictEqual(events.hookBody('balance_depleted', 'https://hooks.zapier.com/x', ' acme:u1 '), {
    target_url: 'https://hooks.zapier.com/x',
    event_types: ['paywall.balance.depleted'],
    filter: { user: 'acme:u1' },
  });
  for (const none of [undefined, null, '', '   ']) {
    assert.deepStrictEqual(events.hookBody('any_event', 'http://127.0.0.1:1/h', none), {
      target_url: 'http://127.0.0.1:1/h',
      event_types: ['*'],
    });
  }
  assert.throws(() => events.hookBody('charge_failed', 'u', ['a', 'b']), /User must be text, not a list/);
  assert.throws(() => events.hookBody('nope', 'u'), /unknown trigger "nope"/);
});

test('hookBody does not share the contract list (a caller editing it cannot change the contract)', () => {
  const body = events.hookBody('deposit_created', 'u');
  body.event_types.push('x');
  assert.deepStrictEqual(events.trigger('deposit_created').event_types, ['paywall.balance.deposit.created']);
});

test('eventOf: a bare event, a wrapped one, JSON text; null for anything else', () => {
  const bare = deposit();
  assert.strictEqual(events.eventOf(bare), bare);
  assert.strictEqual(events.eventOf({ delivery: { id: 'dlv_1' }, event: bare }), bare);
  assert.deepStrictEqual(events.eventOf(JSON.stringify(bare)), bare);
  for (const junk of [null, undefined, '', 'not json', [], [bare], 42, {}, { id: 'x' }, { type: 't' },
    { id: '', type: 't' }, { id: 1, type: 't' }, { delivery: {}, event: 'x' }, { event: { id: 'x' } }]) {
    assert.strictEqual(events.eventOf(junk), null, JSON.stringify(junk));
  }
});

test('userOf: externalUserId, else user, else null', () => {
  assert.equal(events.userOf(deposit({ user: 'acme:other' })), 'acme:u1');
  assert.equal(events.userOf(deposit({ externalUserId: '', user: 'acme:u2' })), 'acme:u2');
  assert.equal(events.userOf(deposit({ externalUserId: null, user: 'acme:u2' })), 'acme:u2');
  assert.equal(events.userOf(deposit({ externalUserId: 7 })), null);
  assert.equal(events.userOf({ id: 'e', type: 't' }), null);
  assert.equal(events.userOf({ id: 'e', type: 't', data: 'x' }), null);
});

test('matches: type and user filter; any_event takes every type', () => {
  const event = deposit();
  assert.ok(events.matches('deposit_created', event));
  assert.ok(events.matches('deposit_created', event, 'acme:u1'));
  assert.ok(!events.matches('deposit_created', event, 'acme:u2'));
  assert.ok(!events.matches('balance_depleted', event));
  assert.ok(events.matches('any_event', { ...event, type: 'relay.operation.ambiguous' }));
  // A user-less event never matches a user filter.
  assert.ok(!events.matches('any_event', { id: 'e', type: 't' }, 'acme:u1'));
});

test('triggerItem adds the user and keeps the event as it came', () => {
  const event = deposit({ user: 'acme:u1' });
  const item = events.triggerItem(event);
  assert.deepStrictEqual(item, { ...event, user: 'acme:u1' });
  assert.ok(!('user' in event), 'the event itself is not changed');
  assert.equal(events.triggerItem({ ...event, user: 'kept' }).user, 'kept');
  assert.strictEqual(events.triggerItem({ id: 'e', type: 't' }).user, null);
});

test('listQuery and listItems', () => {
  assert.deepStrictEqual(events.listQuery('charge_failed'), { limit: '10', type: 'paywall.balance.charge.failed' });
  assert.deepStrictEqual(events.listQuery('any_event'), { limit: '10' });
  // No user filter on the relay's list: with one, ask for the most and keep that user's here.
  assert.deepStrictEqual(events.listQuery('balance_depleted', ' acme:u1 '), { limit: '100', type: 'paywall.balance.depleted' });
  const many = { data: Array.from({ length: 30 }, (_v, i) => ({ ...deposit(), id: `evt_${i}` })) };
  assert.equal(events.listItems('deposit_created', many).length, 10);
  const page = { data: [deposit(), { ...deposit({ externalUserId: 'acme:u2' }), id: 'evt_2' }, 'junk', { id: 'x' }] };
  assert.deepStrictEqual(events.listItems('deposit_created', page).map((e) => e.id), ['evt_1', 'evt_2']);
  assert.deepStrictEqual(events.listItems('deposit_created', page, 'acme:u2').map((e) => e.id), ['evt_2']);
  assert.deepStrictEqual(events.listItems('balance_depleted', page), []);
  assert.strictEqual(events.listItems('deposit_created', [deposit()]), null);
  assert.strictEqual(events.listItems('deposit_created', { data: 'x' }), null);
});

test('sameHook compares target, types in any order, and the user filter', () => {
  const hook = { id: 'hk_1', target_url: 'u', event_types: ['paywall.balance.depleted'], filter: { user: 'a' } };
  assert.ok(events.sameHook(hook, 'balance_depleted', 'u', 'a'));
  assert.ok(!events.sameHook(hook, 'balance_depleted', 'u', ''));
  assert.ok(!events.sameHook(hook, 'balance_depleted', 'v', 'a'));
  assert.ok(!events.sameHook(hook, 'charge_failed', 'u', 'a'));
  assert.ok(!events.sameHook({ ...hook, event_types: ['*'] }, 'balance_depleted', 'u', 'a'));
  assert.ok(events.sameHook({ id: 'h', target_url: 'u', event_types: ['*'], filter: null }, 'any_event', 'u'));
  assert.ok(!events.sameHook(null, 'any_event', 'u'));
});

test('hookPath encodes the id', () => {
  assert.equal(events.hookPath(), '/v1/relay/hooks');
  assert.equal(events.hookPath('hk_1'), '/v1/relay/hooks/hk_1');
  assert.equal(events.hookPath('../admin?x'), '/v1/relay/hooks/..%2Fadmin%3Fx');
  assert.equal(events.hookIdOf({ id: 'hk_1' }), 'hk_1');
  assert.equal(events.hookIdOf({ id: '' }), null);
  assert.equal(events.hookIdOf({ id: 5 }), null);
});
