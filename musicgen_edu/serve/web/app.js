/*
 * musicgen_edu's web page: everything it does is a call to this server's API.
 *
 * One click of Generate, in order:
 *
 *   request body   <- form.js: the prompt, the model picker, one control per field of
 *                     GenerateRequest (from /openapi.json)
 *   the run        <- run.js: the WebSocket stream (audio while it is decoded) or
 *                     POST /v1/generate; progress over Server-Sent Events; Cancel
 *   result         <- here: GET /v1/jobs/{id}/audio as a blob, into the player and the
 *                     history (GET /v1/jobs), with its download link
 *
 * api.js holds what they share: the API key (sessionStorage), fetch() with it, and errors.
 * <body data-ready="true"> once the schema, the models and the history have loaded.
 */
import {
  $, el, record, setStatus, KEY_ITEM, apiKey, ApiError, api, showError, clearError,
} from './api.js';
import { loadModels, loadSettings, requestBody, promptChanged, checkPrompt } from './form.js';
import { generate, cancel } from './run.js';

const blobs = new Map();      // job id -> blob: URL of its WAV, fetched once

// ---- 1. The player and the history (GET /v1/jobs, /v1/jobs/{id}/audio) -------------------
/** A blob: URL of a job's WAV, fetched with the key once. */
async function audioUrl(id) {
  if (!blobs.has(id)) {
    const response = await api(`/v1/jobs/${id}/audio?format=wav`, { raw: true });
    blobs.set(id, URL.createObjectURL(await response.blob()));
  }
  return blobs.get(id);
}

async function showResult(id, { autoplay }) {
  const player = $('player');
  player.src = await audioUrl(id);
  player.dataset.jobId = id;
  $('now-playing').textContent = `Job ${id.slice(0, 8)}`;
  if (autoplay) {
    player.play().catch(() => setStatus('Done: press play to listen.'));
  }
  refreshHistory().catch(showError);                  // its download link is ready now
}

function historyRow(job) {
  const request = job.request || {};
  const prompts = request.prompts ? request.prompts.filter(Boolean).join(' | ') : '(a table)';
  const row = el('tr', { 'data-job-id': job.id, 'data-status': job.status });
  const cells = [
    new Date(job.created_at * 1000).toLocaleTimeString(),
    prompts || '(no text)', job.model,
    request.settings ? String(request.settings.duration) : '', job.status,
  ];
  row.append(...cells.map((text) => el('td', {}, text)));
  if (job.error) row.children[4].title = job.error;
  const actions = el('td', { class: 'actions' });
  if (job.status === 'succeeded' && job.kind !== 'batch') {
    const play = el('button', { type: 'button', class: 'small' }, 'play');
    play.addEventListener('click', () => showResult(job.id, { autoplay: true }).catch(showError));
    const link = el('a', { class: 'download', download: `musicgen_${job.id.slice(0, 8)}.wav`,
      href: blobs.get(job.id) || '#' }, 'download');
    link.addEventListener('click', (event) => download(event, link, job.id));
    actions.append(play, link);
  }
  row.append(actions);
  return row;
}

/** A download link's first click fetches the audio (with the key), then clicks itself. */
async function download(event, link, id) {
  if (link.href.startsWith('blob:')) return;          // fetched: the browser saves it
  event.preventDefault();
  try {
    link.href = await audioUrl(id);
    link.click();
  } catch (err) {
    showError(err);
  }
}

async function refreshHistory() {
  const list = await api('/v1/jobs?limit=20');
  $('history').tBodies[0].replaceChildren(...list.jobs.map(historyRow));
}

/** Generate: the form's request, run over the stream or as a job (run.js). */
function onGenerate() {
  let body;
  try {
    body = requestBody();
  } catch (err) {
    showError(new ApiError('', `a setting is not valid JSON: ${err.message}`));
    return;
  }
  generate(body, { stream: $('stream').checked, onEnd: runEnded });
}

/** A run has ended: a clip goes to the player (playing, unless it was heard streamed). */
function runEnded(run, status) {
  if (status === 'succeeded') {
    showResult(run.id, { autoplay: run.chunks === 0 }).catch(showError);
  } else {
    refreshHistory().catch(showError);
  }
}

// ---- 2. Start-up and wiring ---------------------------------------------------------------
async function loadWithKey() {
  clearError();
  try {
    await loadModels();
    await refreshHistory();
  } catch (err) {
    showError(err);
  }
  if ($('prompt').value.trim()) checkPrompt();
}

async function start() {
  const keyBox = $('api-key');
  keyBox.value = apiKey();
  keyBox.addEventListener('change', () => {
    const key = keyBox.value.trim();
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    else sessionStorage.removeItem(KEY_ITEM);
    loadWithKey();
  });
  $('prompt').addEventListener('input', promptChanged);
  $('generate').addEventListener('click', onGenerate);
  $('cancel').addEventListener('click', cancel);
  $('refresh').addEventListener('click', () => refreshHistory().catch(showError));
  try {
    await loadSettings();
  } catch (err) {
    showError(new ApiError(0, `the request schema (/openapi.json) could not be read: ${err.message}`));
  }
  await loadWithKey();
  record.ready = 'true';
}

start();

