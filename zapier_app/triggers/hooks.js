'use strict';

// The instant (REST hook) triggers: Deposit Created, Balance Depleted, Charge Failed. What each
// subscribes to, its label, sample and output fields are data in schemas/events-contract.json
// (copied to lib/generated/ by `npm run generate`); the requests come from relay-events.js.
//
// - performSubscribe: POST /v1/relay/hooks {target_url: bundle.targetUrl, event_types, filter};
//   the relay answers the hook with its id, which Zapier keeps as bundle.subscribeData.
// - performUnsubscribe: DELETE /v1/relay/hooks/<id>. A hook the relay no longer has (it deletes
//   one whose target answered 410, which Zapier does for a Zap that is off) counts as removed.
// - perform: the event the relay POSTed to the target (bundle.cleanedRequest), as one item.
// - performList: GET /v1/relay/events?type=...: real recent events, for samples and Zap tests.
// Zapier turns a Zap's trigger off by itself on 410, so nothing else is needed there.

const events = require('../lib/generated/relay-events');
const { requireObjectBody, unexpectedBodyError } = require('../lib/errors');
const { relayRequest } = require('../lib/relay');

const { EVENTS } = events;

// Zapier names a nested output "data__amount"; the contract names it by path "data.amount".
const outputKey = (path) => path.replace(/\./g, '__');

const userField = {
  key: 'user',
  label: EVENTS.filter_user.label,
  type: 'string',
  required: false,
  placeholder: EVENTS.filter_user.placeholder,
  helpText: EVENTS.filter_user.help,
};

// The filter as Zapier gave it; a list or object (a mapped line item) is refused with the field's name.
const userOf = (z, bundle) => {
  try {
    return events.filterUser((bundle.inputData || {}).user);
  } catch (error) {
    throw new z.errors.Error(`${error.message}. Enter one Paywalls user id, or leave User empty.`, 'field-not-text', 400);
  }
};

// The code of a z.errors.Error thrown by the middleware (its message is JSON).
const errorCode = (error) => {
  try {
    return JSON.parse(error.message).code;
  } catch (_e) {
    return undefined;
  }
};

function hookTrigger(name) {
  const spec = events.trigger(name);

  const performSubscribe = async (z, bundle) => {
    const response = await relayRequest(z, bundle, {
      url: events.hookPath(),
      method: 'POST',
      body: events.hookBody(name, bundle.targetUrl, userOf(z, bundle)),
    });
    const hook = requireObjectBody(z, response);
    if (!events.hookIdOf(hook)) {
      throw unexpectedBodyError(z, response);
    }
    return hook;
  };

  const performUnsubscribe = async (z, bundle) => {
    const id = events.hookIdOf(bundle.subscribeData);
    if (!id) {
      // Nothing was subscribed (or Zapier lost the data): nothing to remove on the relay.
      return { id: null, deleted: false };
    }
    try {
      await relayRequest(z, bundle, { url: events.hookPath(id), method: 'DELETE' });
    } catch (error) {
      // The relay's own 404 problem: the hook is already gone. A 404 from something that is not
      // the relay is "no-relay-here" and still fails.
      if (errorCode(error) !== 'not-found') {
        throw error;
      }
    }
    return { id, deleted: true };
  };

  const perform = async (z, bundle) => {
    const event = events.eventOf(bundle.cleanedRequest);
    if (!event || !events.matches(name, event, userOf(z, bundle))) {
      return [];
    }
    return [events.triggerItem(event)];
  };

  const performList = async (z, bundle) => {
    const user = userOf(z, bundle);
    const response = await relayRequest(z, bundle, {
      url: EVENTS.events_path,
      method: 'GET',
      params: events.listQuery(name, user),
    });
    const items = events.listItems(name, requireObjectBody(z, response), user);
    if (items === null) {
      throw unexpectedBodyError(z, response);
    }
    return items;
  };

  return {
    key: spec.zapier.key,
    noun: spec.zapier.noun,
    display: { label: spec.label, description: spec.description },
    operation: {
      type: 'hook',
      inputFields: [{ ...userField }],
      performSubscribe,
      performUnsubscribe,
      perform,
      performList,
      sample: spec.sample,
      outputFields: spec.outputs.map((output) => ({ key: outputKey(output.path), label: output.label, type: output.type })),
    },
  };
}

// Every trigger of the contract that Zapier offers (zapier: null means n8n only).
const triggers = Object.keys(EVENTS.triggers)
  .filter((name) => EVENTS.triggers[name].zapier)
  .map(hookTrigger);

module.exports = { hookTrigger, triggers, outputKey };
