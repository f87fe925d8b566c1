'use strict';

// Shared bits of the unit tests, and the step-error reader the e2e tests use too (their own bits are in test/e2e/).

const BASE_URL = 'https://relay.test';
const TOKEN = 'pwr_unit_test_token';

const authData = (overrides = {}) => ({ baseUrl: BASE_URL, token: TOKEN, ...overrides });

const problem = (name, status, extra = {}) => ({
  type: `urn:paywalls-relay:problem:${name}`,
  title: name,
  status,
  detail: `detail of ${name}`,
  ...extra,
});

const PROBLEM_HEADERS = { 'Content-Type': 'application/problem+json' };

// z.errors.Error and ThrottledError carry a JSON message; this reads it back, with the error's name.
const stepError = (error) => {
  let parsed;
  try {
    parsed = JSON.parse(error.message);
  } catch (_e) {
    parsed = { message: error.message };
  }
  return { name: error.name, ...parsed };
};

// The error of a call that must fail.
const errorOf = async (promise) => {
  try {
    await promise;
  } catch (error) {
    return stepError(error);
  }
  throw new Error('expected the call to fail, but it succeeded');
};

// nock 13 gives header values as arrays for requests made with fetch.
const flatHeaders = (headers) =>
  Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : v]));

module.exports = { BASE_URL, TOKEN, authData, problem, PROBLEM_HEADERS, errorOf, stepError, flatHeaders };
