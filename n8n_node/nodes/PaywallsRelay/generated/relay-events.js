'use strict';

// The instant triggers' shared JavaScript, used by the Zapier app's hook triggers and the n8n
// PaywallsRelayTrigger (each package's `npm run generate` copies this file and
// schemas/events-contract.json into the package; neither edits its copy). What a trigger
// subscribes to is data in events-contract.json; this file turns it into the relay's REST-hook
// requests (POST/DELETE /v1/relay/hooks, GET /v1/relay/events) and reads what the relay POSTs.
//
// CommonJS, no dependency: the n8n node must keep zero runtime dependencies.

function loadJson(name) {
  try {
    return require(`./${name}`);
  } catch (error) {
    if (error.code !== 'MODULE_NOT_FOUND') {
      throw error;
    }
    return require(`../${name}`);
  }
}

const EVENTS = loadJson('events-contract.json');
const ANY = '*';

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function trigger(name) {
  const spec = Object.prototype.hasOwnProperty.call(EVENTS.triggers, name) ? EVENTS.triggers[name] : null;
  if (!spec) {
    throw new TypeError(`unknown trigger ${JSON.stringify(name)}; one of ${Object.keys(EVENTS.triggers).join(', ')}`);
  }
  return spec;
}

// The trigger's User filter, trimmed; '' when none. A list or an object is not a user id.
function filterUser(value) {
  if (value === undefined || value === null) {
    return '';
  }
  if (typeof value === 'string' || typeof value === 'number') {
    return String(value).trim();
  }
  throw new TypeError(`User must be text, not ${Array.isArray(value) ? 'a list' : typeof value}`);
}

// POST /v1/relay/hooks body: the target the relay posts each matching event to.
function hookBody(name, targetUrl, user) {
  const body = { target_url: targetUrl, event_types: [...trigger(name).event_types] };
  const who = filterUser(user);
  if (who) {
    body.filter = { user: who };
  }
  return body;
}

// The event in a POST the relay (or Paywalls) made: a bare event {id, type, ...} or one wrapped
// as {delivery, event}. null when the body is neither, so a stray POST starts nothing.
function eventOf(body) {
  let value = body;
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch (_e) {
      return null;
    }
  }
  if (isObject(value) && isObject(value.event) && !('type' in value && 'id' in value)) {
    value = value.event;
  }
  if (!isObject(value) || typeof value.id !== 'string' || !value.id || typeof value.type !== 'string' || !value.type) {
    return null;
  }
  return value;
}

// An event's user: data.externalUserId (Paywalls' field), else data.user (relay/events.py user_of).
function userOf(event) {
  const data = isObject(event) && isObject(event.data) ? event.data : {};
  for (const key of ['externalUserId', 'user']) {
    if (typeof data[key] === 'string' && data[key] !== '') {
      return data[key];
    }
  }
  return null;
}

// Whether the trigger fires for this event: its type is one the trigger subscribes to and, with a
// User filter, the event is that user's. The relay already filters; this is the second check
// against a hook left over from another setting.
function matches(name, event, user) {
  const types = trigger(name).event_types;
  if (!isObject(event) || !(types.includes(ANY) || types.includes(event.type))) {
    return false;
  }
  const who = filterUser(user);
  return !who || userOf(event) === who;
}

// The item a trigger puts out: the event as it came, plus `user` (userOf) at the top level, so
// one mapping works for Paywalls' events and the relay's own. An event's own `user` key wins.
function triggerItem(event) {
  const item = { ...event };
  if (!Object.prototype.hasOwnProperty.call(item, 'user')) {
    item.user = userOf(event);
  }
  return item;
}

// GET /v1/relay/events query for a trigger's recent events (Zapier performList). The relay has no
// user filter there: with a User filter, ask for the most it gives and keep that user's here.
function listQuery(name, user) {
  const types = trigger(name).event_types;
  const query = { limit: String(filterUser(user) ? EVENTS.list_limit_filtered : EVENTS.list_limit) };
  if (!types.includes(ANY)) {
    query.type = types.join(',');
  }
  return query;
}

// The items of a GET /v1/relay/events page ({data: [events]}) for a trigger, newest first as the
// relay sent them. null when the body is not such a page (something else answered).
function listItems(name, page, user) {
  if (!isObject(page) || !Array.isArray(page.data)) {
    return null;
  }
  return page.data
    .map(eventOf)
    .filter((event) => event && matches(name, event, user))
    .slice(0, EVENTS.list_limit)
    .map(triggerItem);
}

// The id the relay gave a hook (POST /v1/relay/hooks answer), or null.
function hookIdOf(body) {
  return isObject(body) && typeof body.id === 'string' && body.id ? body.id : null;
}

function hookPath(id) {
  return id === undefined ? EVENTS.hooks_path : `${EVENTS.hooks_path}/${encodeURIComponent(id)}`;
}

// Whether a listed hook (GET /v1/relay/hooks item) is the one this trigger would create now:
// same target, same event types (any order), same User filter.
function sameHook(hook, name, targetUrl, user) {
  if (!isObject(hook) || hook.target_url !== targetUrl || !Array.isArray(hook.event_types)) {
    return false;
  }
  const want = [...trigger(name).event_types].sort();
  const have = [...hook.event_types].sort();
  const filter = isObject(hook.filter) ? hook.filter : {};
  const hookUser = typeof filter.user === 'string' ? filter.user : '';
  return want.length === have.length && want.every((type, i) => type === have[i]) && hookUser === filterUser(user);
}

module.exports = {
  EVENTS,
  ANY,
  trigger,
  filterUser,
  hookBody,
  hookPath,
  hookIdOf,
  sameHook,
  eventOf,
  userOf,
  matches,
  triggerItem,
  listQuery,
  listItems,
};
