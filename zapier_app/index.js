'use strict';

const zapier = require('zapier-platform-core');

const packageJson = require('./package.json');
const authentication = require('./authentication');
const middleware = require('./middleware');

const depositCredits = require('./creates/deposit_credits');
const chargeUser = require('./creates/charge_user');
const getTopupLink = require('./creates/get_topup_link');
const findUserBalance = require('./searches/find_user_balance');
const newDeposit = require('./triggers/new_deposit');
const hooks = require('./triggers/hooks');

// Strip the module-only helpers (e.g. REASONS) off the action definitions.
const definition = ({ key, noun, display, operation }) => ({ key, noun, display, operation });

module.exports = {
  version: packageJson.version,
  platformVersion: zapier.version,

  flags: {
    // Let afterResponse see 429 answers so their message names the relay token's rate
    // limit; it still raises ThrottledError with the relay's Retry-After.
    throwForThrottlingEarly: false,
  },

  authentication,
  beforeRequest: [...middleware.befores],
  afterResponse: [...middleware.afters],

  triggers: {
    [newDeposit.key]: definition(newDeposit),
    ...Object.fromEntries(hooks.triggers.map((trigger) => [trigger.key, definition(trigger)])),
  },
  searches: {
    [findUserBalance.key]: definition(findUserBalance),
  },
  creates: {
    [depositCredits.key]: definition(depositCredits),
    [chargeUser.key]: definition(chargeUser),
    [getTopupLink.key]: definition(getTopupLink),
  },
  resources: {},
};
