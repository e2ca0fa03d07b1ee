/*
 * The page's helpers and its API client: the key, fetch() with it, and errors as messages.
 *
 * The API key lives in sessionStorage (this tab only, gone when it closes) and goes out as
 * the X-API-Key header; only the WebSocket (run.js) takes it as ?api_key=, since browsers
 * cannot set headers on one. An answer other than 2xx becomes an ApiError: its status, the
 * server's own detail, and Retry-After; showError() puts it on the page with what the status
 * means to someone at this page. Text from the server always goes in with textContent.
 */

// ---- 1. Small helpers ----------------------------------------------------------------------
export const $ = (id) => document.getElementById(id);
export const record = document.body.dataset;     // data-* attributes on <body> (run.js)
export const KEY_ITEM = 'musicgen-api-key';      // the sessionStorage entry

/** A new element with attributes and text (text is never parsed as HTML). */
export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function setStatus(text) {
  $('status').textContent = text;
}

// ---- 2. The API key (sessionStorage) -------------------------------------------------------
export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || '';
}

export function keyHeaders() {
  const key = apiKey();
  return key ? { 'X-API-Key': key } : {};
}

// ---- 3. Calling the API, and its errors ----------------------------------------------------
/** An answer other than 2xx: its status, the server's detail and Retry-After (429, 503). */
export class ApiError extends Error {
  constructor(status, detail, retryAfter = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

/** fetch() with the key and JSON; resolves to the parsed body (or the Response, if raw). */
export async function api(path, { method = 'GET', body, signal, raw = false } = {}) {
  const headers = keyHeaders();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method, headers, signal, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, `cannot reach the server (${err.message}).`);
  }
  if (!response.ok) throw await apiError(response);
  return raw ? response : response.json();
}

async function apiError(response) {
  let detail = response.statusText;
  try {
    const body = await response.json();               // {"detail": "...", "type": "..."}
    detail = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
  } catch (err) { /* not JSON: keep the status text */ }
  return new ApiError(response.status, detail, response.headers.get('Retry-After'));
}

// What each status means for someone at this page; the server's own detail follows it.
const EXPLAIN = {
  0: 'No connection to the server.',
  401: 'API key missing or unknown (401): enter the key you were given in the API key box.',
  403: 'Not allowed (403): this key\u2019s role cannot do that.',
  404: 'Not found (404).',
  409: 'Not possible now (409).',
  410: 'Deleted (410): the server no longer keeps this result.',
  413: 'Too large (413).',
  422: 'The request is not valid (422):',
  429: 'Too many requests (429): wait before trying again.',
  503: 'The service is busy or still loading (503): try again shortly.',
  job: 'The job failed:',                         // the job ran and failed: the worker's reason
};

export function showError(err) {
  if (err.name === 'AbortError') return;
  const status = err instanceof ApiError ? err.status : '';
  let title = EXPLAIN[status] || (status ? `Error ${status}:` : 'Error:');
  if (status === 429 && err.retryAfter) {
    title = `Too many requests (429): wait ${err.retryAfter} s before trying again.`;
  }
  const box = $('error');
  box.dataset.status = String(status);
  box.querySelector('.title').textContent = title;
  box.querySelector('.detail').textContent = err.detail || err.message;
  box.hidden = false;
}

export function clearError() {
  $('error').hidden = true;
  delete $('error').dataset.status;
}

