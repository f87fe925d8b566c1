'use strict';

// The Zapier fields of each operation, from lib/generated/fields.json (generated from
// schemas/client-contract.json by `npm run generate`). A field with "showWhen" becomes a
// dynamic field: Zapier shows it only while the fields it depends on have those values
// (Custom Dedupe Fields only when Deduplicate On is Custom fields; Deduplicate On has
// altersDynamicFields, so Zapier asks again when it changes).

const GENERATED = require('./generated/fields.json');

const advancedGroup = { key: 'advanced', label: 'Advanced', emphasize: false };

const valueOf = (inputData, key) => {
  const value = inputData ? inputData[key] : undefined;
  return typeof value === 'string' ? value.trim() : value;
};

function dynamicField(field) {
  const { showWhen, ...zapierField } = field;
  const shown = (z, bundle) =>
    Object.entries(showWhen).every(([key, value]) => valueOf(bundle.inputData, key) === value) ? [zapierField] : [];
  // Named after the field, so a Zapier error about it says which.
  Object.defineProperty(shown, 'name', { value: `show_${field.key}` });
  return shown;
}

function inputFields(op) {
  return GENERATED[op].inputFields.map((field) => (field.showWhen ? dynamicField(field) : { ...field }));
}

function outputFields(op) {
  return GENERATED[op].outputFields.map((field) => ({ ...field }));
}

const definition = (op) => GENERATED[op];

module.exports = { inputFields, outputFields, definition, advancedGroup, GENERATED };
