/*
 * The request form: the model picker, one control per field of the request schema, and
 * live feedback on the prompt.
 *
 * The settings are not written here. GenerateRequest is built from GenerationConfig's fields
 * on the server (serve/schemas.py); its JSON schema in /openapi.json lists each one with its
 * JSON type and, in its description, its default. A number gets a number box, a boolean a
 * choice, a string a text box: a new GenerationConfig field gets a control at the next reload.
 * Ranges are not repeated either: a value out of range comes back as the server's 422.
 */
import { $, el, api, showError } from './api.js';

const OWN_FIELDS = new Set(['prompt', 'prompts', 'model']);   // fields with their own control

// ---- 1. The model picker (GET /v1/models) --------------------------------------------------
export async function loadModels() {
  const list = await api('/v1/models');
  const picker = $('model');
  picker.replaceChildren(...list.models.map((m) => {
    const notes = [m.loaded ? '' : 'not loaded yet', m.melody ? 'melody' : '',
      m.channels === 2 ? 'stereo' : ''].filter(Boolean);
    const option = el('option', { value: m.name },
      notes.length ? `${m.name} (${notes.join(', ')})` : m.name);
    option.selected = m.name === list.default;
    return option;
  }));
}

// ---- 2. Settings from the request schema (GET /openapi.json) -------------------------------
/** Follow "$ref": "#/components/schemas/..." inside the OpenAPI document. */
function resolve(doc, schema) {
  while (schema && schema.$ref) {
    schema = schema.$ref.replace(/^#\//, '').split('/').reduce((node, key) => node[key], doc);
  }
  return schema;
}

/** The kind of control a property needs: its one non-null JSON type (or an enum). */
function kindOf(property) {
  const options = (property.anyOf || [property]).filter((o) => o.type !== 'null');
  const only = options.length === 1 ? options[0] : {};
  if (only.enum) return { kind: 'enum', values: only.enum, spec: only };
  const known = ['number', 'integer', 'boolean', 'string'];
  return { kind: known.includes(only.type) ? only.type : 'json', spec: only };
}

/** The default a field's description names: "GenerationConfig.top_k (default 250)"; a
 * Python string's quotes are dropped ('counter' -> counter). */
function defaultOf(property) {
  if (property.default !== undefined && property.default !== null) return String(property.default);
  const match = /\(default (.*)\)\s*$/.exec(property.description || '');
  return match ? match[1].replace(/^'(.*)'$/, '$1') : '';
}

function control(name, property) {
  const { kind, values, spec } = kindOf(property);
  const fallback = defaultOf(property);
  let input;
  if (kind === 'boolean' || kind === 'enum') {
    input = el('select');
    input.append(el('option', { value: '' }, fallback ? `default (${fallback})` : 'default'));
    for (const v of kind === 'boolean' ? ['true', 'false'] : values) {
      input.append(el('option', { value: String(v) }, String(v)));
    }
  } else if (kind === 'number' || kind === 'integer') {
    input = el('input', { type: 'number', step: kind === 'integer' ? '1' : 'any' });
    for (const [attr, key] of [['min', 'minimum'], ['max', 'maximum']]) {
      if (spec[key] !== undefined) input.setAttribute(attr, String(spec[key]));
    }
  } else {
    input = el('input', { type: 'text', spellcheck: 'false' });
    if (spec.maxLength) input.setAttribute('maxlength', String(spec.maxLength));
  }
  input.name = name;
  input.dataset.kind = kind;
  if (input.tagName === 'INPUT' && fallback) input.placeholder = fallback;
  const label = el('label', { class: 'field', 'data-field': name, title: property.description || '' });
  label.append(el('span', {}, property.title || name), input);
  return label;
}

export async function loadSettings() {
  const doc = await (await fetch('/openapi.json', { cache: 'no-store' })).json();
  const body = doc.paths['/v1/generate'].post.requestBody.content['application/json'].schema;
  const schema = resolve(doc, body);
  const controls = Object.entries(schema.properties)
    .filter(([name]) => !OWN_FIELDS.has(name))
    .map(([name, property]) => control(name, property));
  $('settings').replaceChildren(...controls);
}

/** The JSON body of a generate request: prompt, model and every setting that is filled in. */
export function requestBody() {
  const body = {};
  const prompt = $('prompt').value.trim();
  if (prompt) body.prompt = prompt;                   // none: the server says what is missing
  if ($('model').value) body.model = $('model').value;
  for (const input of $('settings').querySelectorAll('[data-kind]')) {
    const raw = input.value.trim();
    if (raw === '') continue;                         // empty: the server's default
    const kind = input.dataset.kind;
    if (kind === 'number' || kind === 'integer') body[input.name] = Number(raw);
    else if (kind === 'boolean') body[input.name] = raw === 'true';
    else if (kind === 'json') body[input.name] = JSON.parse(raw);
    else body[input.name] = raw;
  }
  return body;
}

// ---- 3. Prompt feedback (POST /v1/prompts/validate, PromptEngineer) ------------------------
let feedbackTimer = null;
let feedbackAbort = null;

export function promptChanged() {
  clearTimeout(feedbackTimer);
  feedbackTimer = setTimeout(checkPrompt, 300);       // once typing pauses
}

export async function checkPrompt() {
  const text = $('prompt').value;
  if (feedbackAbort) feedbackAbort.abort();           // an older answer must not win
  if (!text.trim()) {
    $('feedback').replaceChildren();
    return;
  }
  feedbackAbort = new AbortController();
  try {
    const report = await api('/v1/prompts/validate',
      { method: 'POST', body: { prompt: text }, signal: feedbackAbort.signal });
    showFeedback(report);
  } catch (err) {
    if (err.name === 'AbortError') return;
    $('feedback').replaceChildren(el('p', { class: 'bad' }, 'The prompt was not checked.'));
    showError(err);
  }
}

function showFeedback(report) {
  const box = $('feedback');
  box.dataset.ok = String(report.ok);
  const tokens = el('p', { class: 'tokens', 'data-tokens': String(report.n_tokens) },
    `${report.n_tokens} / ${report.max_tokens} tokens${report.tokens_exact ? '' : ' (estimated)'}`
    + ` \u00b7 ${report.n_words} words`);
  const list = (cls, items) => {
    const ul = el('ul', { class: cls });
    ul.append(...items.map((text) => el('li', {}, text)));
    return ul;
  };
  const parts = [tokens, list('errors', report.errors), list('warnings', report.warnings)];
  if (report.missing.length) {
    const missing = el('p', { class: 'missing' }, 'Not named yet: ');
    missing.append(...report.missing.map((facet) => el('span', { class: 'facet' }, facet)));
    parts.push(missing);
  }
  box.replaceChildren(...parts);
}

