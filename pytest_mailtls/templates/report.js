const cells = JSON.parse(document.getElementById('data').textContent);
const drawer = document.getElementById('drawer'), body = document.getElementById('drawer-body');
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
function show(i) {
  const r = cells[i]; if (!r) return;
  document.querySelectorAll('td.sel').forEach(t => t.classList.remove('sel'));
  const td = document.querySelector('td[data-i="' + i + '"]'); if (td) td.classList.add('sel');
  const d = r.diagnosis, n = r.negotiated || {};
  let h = '<span class="badge v-' + r.verdict + '">' + esc(r.verdict) + '</span><h2>' + esc(r.id) + '</h2>';
  h += '<p>' + esc(r.verdict_reason) + '</p><dl>';
  h += '<dt>expected</dt><dd>' + esc(r.expected) + (r.secure_overlap ? ' <small>(a secure session exists)</small>' : '') + '</dd>';
  h += '<dt>because</dt><dd>' + esc(r.expected_reason) + '</dd>';
  h += '<dt>actual</dt><dd>' + esc(r.actual) + '</dd>';
  h += '<dt>negotiated</dt><dd>' + esc(n.version ? n.version + ' ' + (n.cipher || '') : '—') + '</dd>';
  h += '<dt>endpoint</dt><dd>' + esc(r.host + ':' + r.port + ' as ' + r.server_hostname) + '</dd>';
  h += '<dt>policy</dt><dd>' + esc(r.policy ? r.policy.name + ' (' + r.policy.min_version + '..' + r.policy.max_version + ')' : 'no TLS') + '</dd>';
  h += '<dt>certificate</dt><dd>' + esc(r.cert || '—') + '</dd>';
  if (r.network) h += '<dt>network</dt><dd>' + esc(r.network) + '</dd>';
  h += '<dt>group</dt><dd>' + esc(r.group || '—') + '</dd><dt>time</dt><dd>' + esc(r.duration) + ' s</dd></dl>';
  if (d) {
    h += '<h3>Diagnosis: ' + esc(d.class) + '</h3><p>' + esc(d.remedy) + '</p>';
    if (d.evidence.length) h += '<pre>' + d.evidence.map(esc).join('\n') + '</pre>';
  }
  if (r.client_error) h += '<h3>Client error</h3><pre>' + esc(r.client_error) + '</pre>';
  if (r.server_log && r.server_log.length) h += '<h3>Server log</h3><pre>' + r.server_log.map(esc).join('\n') + '</pre>';
  if (r.transcript) h += '<h3>Transcript</h3><pre>' + esc(r.transcript) + '</pre>';
  body.innerHTML = h;
  drawer.classList.add('open');
  history.replaceState(null, '', '#cell=' + i);
}
function hide() { drawer.classList.remove('open'); document.querySelectorAll('td.sel').forEach(t => t.classList.remove('sel')); history.replaceState(null, '', '#'); }
document.querySelectorAll('[data-i]').forEach(el => {
  el.addEventListener('click', () => show(+el.dataset.i));
  el.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); show(+el.dataset.i); } });
});
document.getElementById('close').addEventListener('click', hide);
document.addEventListener('keydown', e => { if (e.key === 'Escape') hide(); });
const off = new Set();
document.querySelectorAll('.chip').forEach(chip => chip.addEventListener('click', () => {
  const v = chip.dataset.filter;
  off.has(v) ? off.delete(v) : off.add(v);
  chip.classList.toggle('off', off.has(v));
  document.querySelectorAll('td[data-i]').forEach(td => td.classList.toggle('dim', off.has(cells[+td.dataset.i].verdict)));
}));
const m = location.hash.match(/cell=(\d+)/); if (m) show(+m[1]);
