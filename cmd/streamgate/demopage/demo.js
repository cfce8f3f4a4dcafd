// The streamgate demo page: no framework, no build step.
//
// DEMO ONLY: the users' portal tokens come from the demo's /demo/users. A real
// portal signs its users in; the rest of what this page does (the gateway's
// routes with Authorization: Bearer, links for <video> and downloads) is what a
// portal's own page would do.
'use strict';

const state = {
  users: [],
  videos: [],
  user: null,        // the user picked, with its token
  watchUntil: 0,     // keep polling the usage until then (ms since the epoch)
  watching: false,   // a poll loop is running
};

const $ = (sel) => document.querySelector(sel);
const player = () => $('#player');

function say(text, isError) {
  const s = $('#status');
  s.textContent = text;
  s.className = isError ? 'error' : '';
}

function minutes(n) {
  return Number(n).toFixed(2);
}

function clock(seconds) {
  const s = Math.round(seconds);
  return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
}

// problemText turns the gateway's problem body into a sentence, with the quota
// figures when the refusal is about minutes.
function problemText(resp, p) {
  let text = resp.status + ' ' + ((p && p.title) || resp.statusText);
  if (p && p.detail) text += ': ' + p.detail;
  if (p && p.minutes_needed !== undefined) {
    text += ' (needs ' + minutes(p.minutes_needed) + ' minutes, ' + minutes(p.minutes_remaining) + ' remain)';
  }
  const retry = resp.headers.get('Retry-After');
  if (retry) text += ' (retry in ' + retry + ' s)';
  return text;
}

// api calls one of the gateway's routes as the picked user.
async function api(method, path, body) {
  const init = { method, headers: { 'Authorization': 'Bearer ' + state.user.token } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(problemText(resp, data));
  return data;
}

async function demoJSON(path) {
  const resp = await fetch(path);
  if (!resp.ok) throw new Error(path + ': ' + resp.status + ' ' + resp.statusText);
  return resp.json();
}

// refreshUsage shows the user's minutes as the ledger has them.
async function refreshUsage() {
  const user = state.user;
  const u = await api('GET', '/v1/me/usage');
  if (user !== state.user) return u;
  const r = $('#remaining');
  r.dataset.minutes = String(u.minutes_remaining);
  r.textContent = minutes(u.minutes_remaining);
  $('#limit').textContent = minutes(u.minutes_limit);
  $('#used').textContent = minutes(u.minutes_used);
  $('#reserved').textContent = minutes(u.minutes_reserved);
  $('#period').textContent = u.period;
  $('#plan').textContent = u.plan;
  return u;
}

// watch keeps the minutes fresh for ms from now, and for as long as the ledger
// holds deliveries open or the video plays.
function watch(ms) {
  state.watchUntil = Math.max(state.watchUntil, Date.now() + ms);
  if (state.watching) return;
  state.watching = true;
  poll();
}

async function poll() {
  let busy = false;
  try {
    const u = await refreshUsage();
    busy = u.deliveries_open > 0 || u.minutes_reserved > 0;
  } catch (e) {
    say('usage: ' + e.message, true);
  }
  if (busy || !player().paused || Date.now() < state.watchUntil) {
    setTimeout(poll, 1000);
  } else {
    state.watching = false;
  }
}

function statusText(d) {
  if (!d) return 'not enabled';
  if (d.status === 'inprogress') return 'generating ' + Math.round(d.percentComplete || 0) + '%';
  return d.status;
}

// refreshDownloads shows each video's download status and enables what can run.
async function refreshDownloads() {
  const user = state.user;
  await Promise.all(state.videos.map(async (v) => {
    const row = document.querySelector('tr[data-uid="' + v.uid + '"]');
    let downloads = {};
    try {
      downloads = (await api('GET', '/v1/videos/' + v.uid + '/downloads')).downloads || {};
    } catch (e) {
      say(v.name + ': ' + e.message, true);
    }
    if (user !== state.user) return;
    for (const type of ['default', 'audio']) {
      const d = downloads[type];
      row.querySelector('td[data-type="' + type + '"]').textContent = statusText(d);
      for (const b of row.querySelectorAll('button[data-type="' + type + '"]')) {
        b.disabled = !(d && d.status === 'ready');
      }
    }
  }));
}

// link asks the gateway for a short-lived link to the video's file.
function link(v, type, filename) {
  const body = { type };
  if (filename) body.filename = filename;
  return api('POST', '/v1/videos/' + v.uid + '/links', body);
}

async function download(v, type) {
  const ext = type === 'audio' ? '.m4a' : '.mp4';
  const l = await link(v, type, v.filename);
  // The gateway answers the link with Content-Disposition: attachment, so the
  // browser saves the file and the page stays.
  const a = document.createElement('a');
  a.href = l.url;
  a.download = v.filename + ext;
  document.body.append(a);
  a.click();
  a.remove();
  say('Downloading ' + v.filename + ext + '. A download the quota cannot cover is refused (403) and the browser shows it failed.');
  watch(10000);
}

async function play(v) {
  const l = await link(v, 'default');
  const p = player();
  $('#playing').textContent = v.name;
  $('#player-box').hidden = false;
  p.src = l.url;
  say('Playing ' + v.name + ' through a link: the minutes drop as the bytes arrive.');
  watch(10000);
  try {
    await p.play();
  } catch (e) {
    // Stopped before it started, or the error listener has said why.
    if (e.name === 'AbortError' || p.error) return;
    throw e;
  }
}

function stop() {
  const p = player();
  p.pause();
  // Without a source the element lets go of its connections, and the gateway
  // settles what they delivered.
  p.removeAttribute('src');
  p.load();
  $('#player-box').hidden = true;
  watch(10000);
}

async function pick(user) {
  // A link belongs to the user who asked for it.
  if (player().getAttribute('src')) stop();
  state.user = user;
  for (const b of document.querySelectorAll('#users button')) {
    b.setAttribute('aria-pressed', String(b.dataset.user === user.id));
  }
  $('#remaining').dataset.minutes = '';
  $('#quota').hidden = false;
  $('#catalogue').hidden = false;
  say('');
  await Promise.all([refreshUsage(), refreshDownloads()]);
}

// act runs a button's action, showing what fails.
function act(f) {
  return () => f().catch((e) => say(e.message, true));
}

function render() {
  const users = $('#users');
  for (const u of state.users) {
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.user = u.id;
    b.setAttribute('aria-pressed', 'false');
    b.textContent = u.id + ' (' + u.plan + ', ' + u.minutes_per_month + ' min/month)';
    b.addEventListener('click', act(() => pick(u)));
    users.append(b);
  }
  const body = $('#videos');
  for (const v of state.videos) {
    const tr = document.createElement('tr');
    tr.dataset.uid = v.uid;
    const cell = (text) => {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
      return td;
    };
    cell(v.name);
    cell(clock(v.duration));
    cell(v.private ? 'signed URLs only' : 'public');
    cell('–').dataset.type = 'default';
    cell('–').dataset.type = 'audio';
    const actions = cell('');
    const button = (label, action, type, f) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = label;
      b.dataset.action = action;
      b.dataset.uid = v.uid;
      b.dataset.type = type;
      b.disabled = true;
      b.addEventListener('click', act(f));
      actions.append(b);
    };
    button('Play', 'play', 'default', () => play(v));
    button('Download MP4', 'download', 'default', () => download(v, 'default'));
    button('Download audio', 'download', 'audio', () => download(v, 'audio'));
    body.append(tr);
  }
}

async function start() {
  $('#stop').addEventListener('click', stop);
  player().addEventListener('error', () => {
    if (!player().getAttribute('src')) return;
    say('The video could not be played: the gateway refused it or the link expired (a spent quota is refused with 403; see the minutes above).', true);
    watch(10000);
  });
  player().addEventListener('pause', () => watch(10000));
  try {
    const [users, videos] = await Promise.all([demoJSON('/demo/users'), demoJSON('/demo/videos')]);
    state.users = users.users;
    state.videos = videos.videos;
  } catch (e) {
    say('The demo could not load its users and videos: ' + e.message, true);
    return;
  }
  render();
}

start();
