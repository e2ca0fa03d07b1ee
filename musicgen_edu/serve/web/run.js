/*
 * One generation, from the click on Generate to its end: submit, progress, audio, cancel.
 *
 *   stream on   -> WebSocket /v1/stream: "start" (the job id), binary float32 chunks that
 *                  Web Audio plays as they come, then "done"
 *   stream off  -> POST /v1/generate -> 202 {"id"}
 *   progress    <- GET /v1/jobs/{id}/events: Server-Sent Events, read with fetch() so that
 *                  the key travels in a header (EventSource cannot send one)
 *   Cancel      -> DELETE /v1/jobs/{id} (a stream with no id yet: close the socket)
 *   the end     -> onEnd(run, status): app.js shows the result and refreshes the history
 *
 * What a run records on <body> as data-* attributes (tests read them; so can you, in the
 * browser's inspector): job-id, job-status, sse-events, sse-last-step, sse-total,
 * sse-saw-running (a step part-way was seen), stream-chunks, streamed-seconds, first-chunk-at
 * and done-at (ms since the page loaded), played-before-done (the first chunk was playing
 * when the job ended).
 */
import { $, record, setStatus, apiKey, ApiError, api, showError, clearError } from './api.js';

const state = {
  run: null,              // the generation in progress (see newRun), or null
  audioContext: null,     // Web Audio, created in the first click (browsers require a gesture)
};

// ---- 1. One generation, from click to result -----------------------------------------------
function newRun(body, onEnd) {
  for (const name of ['jobId', 'jobStatus', 'sseEvents', 'sseLastStep', 'sseTotal',
    'sseSawRunning', 'streamChunks', 'streamedSeconds', 'firstChunkAt', 'doneAt',
    'playedBeforeDone']) delete record[name];
  return {
    body, onEnd, id: null, finished: false, cancelled: false,
    abort: new AbortController(),       // stops the SSE reader when the run ends
    ws: null, sampleRate: 0, channels: 1, // the stream's socket and audio format
    sources: [], nextTime: 0, firstStartAt: null, chunks: 0, streamed: 0,
  };
}

function setRunning(running) {
  $('generate').disabled = running;
  $('cancel').disabled = !running;
  if (running) $('progress').removeAttribute('value');   // moving stripes until a step is known
}

/** Start a run of `body` (a GenerateRequest); `stream`: over the WebSocket. */
export async function generate(body, { stream, onEnd }) {
  if (state.run) return;
  clearError();
  const run = newRun(body, onEnd);
  state.run = run;
  setRunning(true);
  setStatus('Submitting\u2026');
  if (stream) {
    startStream(run, audioContext());                 // created in the click: allowed to play
    return;
  }
  try {
    const accepted = await api('/v1/generate', { method: 'POST', body });
    jobKnown(run, accepted.id);
    if (run.cancelled) await cancelJob(run);          // Cancel was clicked while submitting
    await followProgress(run, true);
    if (!run.finished) await pollJob(run);            // the stream ended early (a restart)
  } catch (err) {
    finishRun(run, 'failed', err);
  }
}

/** Ask for the job once a second until it has ended: when the event stream was cut. */
async function pollJob(run) {
  while (!run.finished) {
    const job = await api(`/v1/jobs/${run.id}`);
    if (['succeeded', 'failed', 'cancelled'].includes(job.status)) {
      finishRun(run, job.status, job.error ? new ApiError('job', job.error) : null, job);
    } else {
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

function jobKnown(run, id) {
  run.id = id;
  record.jobId = id;
  setStatus(`Job ${id.slice(0, 8)}: queued\u2026`);
}

/** The end of a run, whatever ended it (done, error, cancel); only the first call counts. */
function finishRun(run, status, err = null, job = null) {
  if (run.finished) return;
  run.finished = true;
  run.abort.abort();
  if (run.ws && run.ws.readyState <= WebSocket.OPEN) run.ws.close(1000);
  record.jobStatus = status;
  record.doneAt = String(Math.round(performance.now()));
  if (state.audioContext && run.firstStartAt !== null) {
    record.playedBeforeDone = String(state.audioContext.currentTime > run.firstStartAt);
  }
  state.run = null;
  setRunning(false);
  if (err) showError(err);
  const name = run.id ? `Job ${run.id.slice(0, 8)}` : 'The request';
  if (status === 'succeeded') {
    $('progress').value = $('progress').max;
    const took = job && job.started_at && job.finished_at
      ? ` in ${(job.finished_at - job.started_at).toFixed(1)} s` : '';
    setStatus(`${name}: done${took}.`);
  } else {
    setStatus(`${name}: ${status}.`);
  }
  run.onEnd(run, status);
}

// ---- 2. Progress over Server-Sent Events (fetch + a stream reader) -------------------------
// EventSource cannot send the X-API-Key header, so the event stream is read with fetch() and
// split into events here: blocks separated by a blank line, "event: <name>" and "data: <json>".
async function followProgress(run, finishes) {
  let response;
  try {
    response = await api(`/v1/jobs/${run.id}/events`, { raw: true, signal: run.abort.signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) onEvent(run, event, finishes);
      }
    }
  } catch (err) {
    if (err.name === 'AbortError' || run.finished) return;
    if (finishes) finishRun(run, 'failed', err);
  }
}

function parseEvent(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;               // a comment: the 15 s keep-alive
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') name = value;
    else if (field === 'data') data.push(value);
  }
  return data.length ? { name, data: JSON.parse(data.join('\n')) } : null;
}

/** progress: {id, status, step, total}; done: the whole job. `finishes`: done ends the run
 * (POST jobs; a stream's run ends with the WebSocket's own done, after its last chunk). */
function onEvent(run, event, finishes) {
  const job = event.data;
  record.sseEvents = String(Number(record.sseEvents || 0) + 1);
  record.sseLastStep = String(job.step);
  record.sseTotal = String(job.total);
  if (job.status === 'running' && job.step > 0 && job.step < job.total) record.sseSawRunning = 'true';
  if (job.total) {
    $('progress').max = job.total;
    $('progress').value = job.step;
  }
  if (event.name === 'done') {
    if (finishes) finishRun(run, job.status, job.error ? new ApiError('job', job.error) : null, job);
    return;
  }
  if (!run.cancelled) {
    const steps = job.total ? `: step ${job.step} / ${job.total}` : '';
    setStatus(`Job ${job.id.slice(0, 8)}: ${job.status}${steps}`);
  }
}

// ---- 3. Audio while it is generated (WebSocket /v1/stream + Web Audio) ---------------------
function audioContext() {
  if (!state.audioContext) state.audioContext = new AudioContext();
  if (state.audioContext.state === 'suspended') state.audioContext.resume();
  return state.audioContext;
}

function startStream(run, context) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const key = apiKey();
  // The one URL with the key in it: a browser's WebSocket cannot carry headers.
  const query = key ? `?api_key=${encodeURIComponent(key)}` : '';
  const ws = new WebSocket(`${scheme}//${location.host}/v1/stream${query}`);
  ws.binaryType = 'arraybuffer';
  run.ws = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify(run.body));
    setStatus('Streaming: waiting for the first audio\u2026');
  };
  ws.onmessage = (message) => {
    if (typeof message.data !== 'string') {
      playChunk(run, context, message.data);
      return;
    }
    const m = JSON.parse(message.data);
    if (m.type === 'start') {                         // comes just before the first chunk
      run.sampleRate = m.sample_rate;
      run.channels = m.channels;
      jobKnown(run, m.id);
      if (run.cancelled) cancelJob(run);
      followProgress(run, false);
    } else if (m.type === 'done') {
      run.id = m.id;
      record.jobId = m.id;
      finishRun(run, m.status, m.error ? new ApiError('job', m.error) : null);
    } else if (m.type === 'error') {                  // 401, 403, 413, 422, 429, 503
      finishRun(run, 'failed', new ApiError(m.status, m.detail));
    }
  };
  ws.onclose = (event) => {                           // closed before done or error
    if (run.cancelled) finishRun(run, 'cancelled');
    else finishRun(run, 'failed', new ApiError(0, `the stream closed early (code ${event.code}).`));
  };
}

/** One binary chunk: float32 samples, channels interleaved ([t, C]), little-endian (the byte
 * order of every machine a browser runs on, so Float32Array reads it as it is). Each chunk is
 * scheduled right after the previous one, so they play as one clip. */
function playChunk(run, context, data) {
  if (run.cancelled || run.finished) return;
  const samples = new Float32Array(data);
  const channels = run.channels;
  const frames = samples.length / channels;
  const buffer = context.createBuffer(channels, frames, run.sampleRate);
  for (let c = 0; c < channels; c++) {
    const out = buffer.getChannelData(c);
    for (let i = 0; i < frames; i++) out[i] = samples[i * channels + c];
  }
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(context.destination);
  const at = Math.max(run.nextTime, context.currentTime + 0.05);
  source.start(at);
  run.nextTime = at + buffer.duration;
  run.sources.push(source);
  if (run.chunks === 0) {
    run.firstStartAt = at;
    record.firstChunkAt = String(Math.round(performance.now()));
  }
  run.chunks += 1;
  run.streamed += buffer.duration;
  record.streamChunks = String(run.chunks);
  record.streamedSeconds = run.streamed.toFixed(3);
}

// ---- 4. Cancel (DELETE /v1/jobs/{id}, or closing a stream that has no id yet) -------------
export async function cancel() {
  const run = state.run;
  if (!run || run.cancelled) return;
  run.cancelled = true;
  $('cancel').disabled = true;
  setStatus('Cancelling\u2026');
  for (const source of run.sources) source.stop();
  if (run.id) await cancelJob(run);                   // the stream or SSE then says cancelled
  else if (run.ws) run.ws.close(1000);                // the server cancels a stream it loses
}

async function cancelJob(run) {
  try {
    await api(`/v1/jobs/${run.id}`, { method: 'DELETE' });
  } catch (err) {
    if (err.status !== 409) showError(err);           // 409: it had ended already
  }
}
