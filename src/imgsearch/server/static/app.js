// imgsearch web app: search (image upload/drop/paste, words, tags), browse, image view, duplicates, status.
// Plain ES module, no third-party code, no request leaves this server. Every view's state is in the URL hash
// (#/view?field=value...), so any view can be shared and reloaded; the JSON API behind it is documented at /docs.
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

const views = ["search", "browse", "viewer", "duplicates", "status"];
const filterFields = ["folder", "date_from", "date_to", "min_width", "min_height", "max_width", "max_height", "format", "tag"];
const filterInputs = { folder: "f-folder", date_from: "f-date-from", date_to: "f-date-to", min_width: "f-min-width",
  min_height: "f-min-height", max_width: "f-max-width", max_height: "f-max-height", format: "f-format", tag: "f-tag" };
let caps = { text: false, tags: false, count: 0 };
let lastFile = null; // an uploaded query image (not in the URL: a file cannot be)
let inflight = null;
let gridOrder = []; // ids of the images shown last, for next/previous in the image view

// -- state in the URL -------------------------------------------------------------------------------------------
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const [view, arg] = path.split("/");
  return { view: views.includes(view) ? view : (view === "image" ? "viewer" : "search"), arg, params: new URLSearchParams(query) };
}
function go(view, params = {}, arg = "") {
  const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const target = `#/${view === "viewer" ? "image" : view}${arg ? "/" + encodeURIComponent(arg) : ""}${qs.toString() ? "?" + qs : ""}`;
  if (location.hash === target) render();
  else if (view === "viewer" && route().view === "viewer") location.replace(target); // next/previous: Esc still goes back to the list
  else location.hash = target;
}
function filters() {
  const out = {};
  for (const f of filterFields) {
    const v = $(filterInputs[f]).value.trim();
    if (v) out[f] = v;
  }
  return out;
}
function setFilters(params) {
  for (const f of filterFields) $(filterInputs[f]).value = params.get(f) || "";
  const any = filterFields.some((f) => params.get(f));
  if (any) { $("filters").hidden = false; $("filters-toggle").setAttribute("aria-expanded", "true"); }
  $("filters-toggle").classList.toggle("active", any);
}
function filterQuery(extra = {}) {
  return new URLSearchParams({ ...filters(), ...extra });
}

// -- small helpers ---------------------------------------------------------------------------------------------
function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}
function detailOf(body, resp) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).slice(-1)[0] || ""}: ${d.msg}`).join("; ");
  return `${resp.status} ${resp.statusText}`;
}
async function api(url, opts = {}) {
  const resp = await fetch(url, opts);
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) throw new Error(detailOf(body, resp));
  return { resp, body };
}
const kib = (b) => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : `${Math.max(1, Math.round(b / 1024))} KiB`);
const day = (iso) => (iso ? new Date(iso).toLocaleDateString() : "?");
function setStatus(node, text, loading = false) {
  node.textContent = text;
  node.classList.toggle("loading", loading);
}

function tagChips(tags, scores, max = 3) {
  const box = el("div", { className: "tags" });
  tags.slice(0, max).forEach((t, i) => {
    const chip = el("span", { className: "tag", textContent: t, tabIndex: -1 });
    chip.setAttribute("role", "link");
    if (scores && scores[i] !== undefined) chip.title = `${t}: ${(scores[i] * 100).toFixed(0)}%, click to search`;
    chip.addEventListener("click", (e) => { e.stopPropagation(); searchWords(`tag:${t}`); });
    box.append(chip);
  });
  return box;
}

// A result or browse card: click = more like this; "details" opens the image view.
function card(r, i, opts = {}) {
  const c = el("div", { className: "card", tabIndex: 0 });
  c.setAttribute("role", "button");
  c.dataset.id = r.id;
  const sub = opts.browse ? `${r.width}×${r.height} · ${day(r.mtime)}` : "";
  c.title = `${r.name}${r.score !== undefined ? `\nscore ${r.score.toFixed(4)}` : ""}\nclick for more like this`;
  const name = el("span", { className: "name" });
  if (!opts.browse) name.append(el("span", { className: "rank", textContent: `${i + 1}.` }));
  name.append(r.name);
  const meta = el("div", { className: "meta" }, name);
  if (r.score !== undefined) meta.append(el("span", { className: "score", textContent: r.score.toFixed(3) }));
  const open = el("button", { type: "button", className: "open", textContent: "details" });
  open.setAttribute("aria-label", `details of ${r.name}`);
  open.addEventListener("click", (e) => { e.stopPropagation(); go("viewer", {}, r.id); });
  meta.append(open);
  c.append(el("img", { loading: "lazy", alt: r.name, src: r.thumbnail_url }), meta);
  if (sub) c.append(el("div", { className: "sub2", textContent: sub }));
  if (r.same_picture) {
    const edits = (r.same_picture.edits || []).map((e) => EDIT_WORDS[e] || e);
    c.classList.add("copy");
    c.append(el("div", { className: "badge", textContent: `same picture${edits.length ? ": " + edits.join(", ") : ""}` }));
  }
  if (r.tags && r.tags.length) c.append(tagChips(r.tags, r.tag_scores));
  const more = () => go("search", { like: r.id, name: r.name, ...filters() });
  c.addEventListener("click", more);
  c.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); opts.enterOpens ? go("viewer", {}, r.id) : more(); }
    if (e.key === "i") go("viewer", {}, r.id);
  });
  return c;
}

// -- search ----------------------------------------------------------------------------------------------------
async function runSearch(params) {
  const k = params.get("k") || $("k").value;
  $("k").value = k;
  const status = $("status"), grid = $("results");
  if (inflight) inflight.abort();
  const ctrl = new AbortController();
  inflight = ctrl;
  showError("");
  const text = params.get("text"), tag = params.get("q_tag"), like = params.get("like");
  let what, request;
  const f = filterQuery({ k });
  if (like) {
    what = `more like ${params.get("name") || "this image"}`;
    $("preview").src = `/api/images/${encodeURIComponent(like)}/thumbnail`;
    $("preview").hidden = false; $("drop-hint").hidden = true;
    $("query-label").textContent = `More like ${params.get("name") || ""}`;
    request = fetch(`/api/images/${encodeURIComponent(like)}/similar?${f}`, { signal: ctrl.signal });
  } else if (text || tag) {
    what = text ? `"${text}"` : `tag ${tag}`;
    $("q").value = text || (caps.text ? `tag:${tag}` : tag);
    if (text) f.set("text", text); else f.append("tag", tag);
    $("preview").hidden = true; $("drop-hint").hidden = false; $("query-label").textContent = "";
    request = fetch(`/api/search?${f}`, { signal: ctrl.signal });
  } else if (params.get("upload") && lastFile) {
    what = lastFile.name;
    const body = new FormData();
    body.append("file", lastFile);
    body.append("k", k);
    f.delete("k");
    request = fetch(`/api/search?${f}`, { method: "POST", body, signal: ctrl.signal });
  } else {
    setStatus(status, caps.count ? "Search with an image (drop, paste, choose) or words above." : "");
    grid.replaceChildren();
    if (!caps.count) grid.append(emptyIndex());
    return;
  }
  setStatus(status, "Searching…", true);
  grid.setAttribute("aria-busy", "true");
  try {
    const resp = await request;
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    if (!resp.ok) throw new Error(detailOf(body, resp));
    gridOrder = body.results.map((r) => r.id);
    grid.replaceChildren(...body.results.map((r, i) => card(r, i)));
    const filtered = Object.keys(filters()).length ? " (filtered)" : "";
    const copies = body.results.filter((r) => r.same_picture).length;
    const copyNote = copies ? ` · the collection holds ${copies === 1 ? "a copy" : copies + " copies"} of this picture` : "";
    setStatus(status, body.message || (body.results.length
      ? `${body.results.length} results for ${what}${filtered} in ${body.took_ms.toFixed(0)} ms${copyNote}`
      : `No results for ${what}${filtered}.`));
  } catch (e) {
    if (e.name === "AbortError") return;
    grid.replaceChildren();
    setStatus(status, "");
    showError(`Search failed: ${e.message}`);
  } finally {
    if (inflight === ctrl) inflight = null;
    grid.removeAttribute("aria-busy");
  }
}
function emptyIndex() {
  return el("p", { className: "empty", textContent: "The index is empty: add images with 'imgsearch index FOLDER --db …' and reload." });
}
function searchWords(raw) {
  const value = raw.trim();
  if (!value) return;
  const tag = value.toLowerCase().startsWith("tag:") ? value.slice(4).trim() : null;
  const params = tag !== null || !caps.text ? { q_tag: tag ?? value } : { text: value };
  go("search", { ...params, ...filters() });
}
function useFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) { showError(`${file.name} is not an image`); return; }
  lastFile = file;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false; $("drop-hint").hidden = true;
  $("query-label").textContent = file.name;
  go("search", { upload: Date.now(), ...filters() });
}

// -- browse ----------------------------------------------------------------------------------------------------
const PAGE = 60;
const browseParams = (extra = {}) => ({ ...filters(), sort: $("sort").value, limit: route().params.get("limit"), ...extra });
async function runBrowse(params) {
  const sort = params.get("sort") || "date", offset = Number(params.get("offset") || 0);
  const size = Math.min(200, Math.max(1, Number(params.get("limit") || PAGE)));
  $("sort").value = sort;
  const status = $("browse-status"), grid = $("browse-grid");
  const gen = generation;
  showError("");
  setStatus(status, "Loading…", true);
  try {
    const folder = params.get("folder");
    const [{ body }, { body: tree }] = await Promise.all([
      api(`/api/images?${filterQuery({ sort, offset, limit: size })}`),
      api(`/api/folders${folder ? "?" + new URLSearchParams({ parent: folder }) : ""}`),
    ]);
    if (stale(gen)) return;
    renderFolders(tree, folder);
    gridOrder = body.items.map((r) => r.id);
    const cards = [];
    let lastGroup = null;
    body.items.forEach((r, i) => {
      const group = sort.startsWith("date") && r.mtime ? new Date(r.mtime).toLocaleDateString(undefined, { year: "numeric", month: "long" }) : null;
      if (group && group !== lastGroup) cards.push(el("h4", { className: "group-head", textContent: group }));
      lastGroup = group;
      cards.push(card(r, i, { browse: true }));
    });
    grid.replaceChildren(...cards);
    if (!body.total) grid.append(caps.count ? el("p", { className: "empty", textContent: "No image matches these filters." }) : emptyIndex());
    const last = Math.min(offset + body.items.length, body.total);
    setStatus(status, body.total ? `${offset + 1}–${last} of ${body.total.toLocaleString()} images` : "");
    $("page-info").textContent = body.total ? `page ${Math.floor(offset / size) + 1} of ${Math.ceil(body.total / size)}` : "";
    $("prev").disabled = offset <= 0;
    $("next").disabled = last >= body.total;
    $("prev").onclick = () => go("browse", { ...Object.fromEntries(params), offset: Math.max(0, offset - size) });
    $("next").onclick = () => go("browse", { ...Object.fromEntries(params), offset: offset + size });
  } catch (e) {
    if (stale(gen)) return;
    grid.replaceChildren();
    setStatus(status, "");
    showError(`Browsing failed: ${e.message}`);
  }
}
function renderFolders(tree, current) {
  const crumbs = $("crumbs"), subs = $("subfolders");
  const root = tree.folder;
  const parts = [];
  const all = el("a", { href: "#", textContent: "all folders" });
  all.addEventListener("click", (e) => { e.preventDefault(); $("f-folder").value = ""; go("browse", browseParams()); });
  parts.push(all);
  if (current) {
    const rel = decodeURIComponent(root.replace(/^file:\/\//, ""));
    parts.push(document.createTextNode(" / "), el("span", { textContent: rel }));
  }
  crumbs.replaceChildren(...parts);
  subs.replaceChildren(...tree.children.map((c) => {
    const label = decodeURIComponent(c.folder.slice(root.length).replace(/\/$/, ""));
    const chip = el("button", { type: "button", className: "chip", textContent: `${label} (${c.images})` });
    chip.addEventListener("click", () => {
      $("f-folder").value = decodeURIComponent(c.folder.replace(/^file:\/\//, ""));
      go("browse", browseParams());
    });
    return chip;
  }));
  $("folder-list").replaceChildren(...tree.children.map((c) => el("option", { value: decodeURIComponent(c.folder.replace(/^file:\/\//, "")) })));
}

// -- image view ------------------------------------------------------------------------------------------------
async function runViewer(id) {
  const gen = generation;
  showError("");
  try {
    const { body: m } = await api(`/api/images/${encodeURIComponent(id)}/meta`);
    if (stale(gen)) return;
    $("viewer-img").src = m.image_url;
    $("viewer-img").alt = m.name;
    $("viewer-link").href = m.image_url;
    $("viewer-name").textContent = m.name;
    const rows = [["path", m.path], ["size", `${m.width} × ${m.height} px, ${kib(m.bytes)}`],
      ["format", m.format || "?"], ["modified", m.mtime ? new Date(m.mtime).toLocaleString() : "?"]];
    $("viewer-meta").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
    const tags = m.tags.length ? tagChips(m.tags, m.tag_scores, 8) : el("div", { textContent: caps.tags ? "no tags" : "" });
    tags.id = "viewer-tags";
    tags.className = "tags big";
    $("viewer-tags").replaceWith(tags);
    $("viewer-similar").onclick = () => go("search", { like: m.id, name: m.name, ...filters() });
    $("viewer-delete").onclick = () => removeImage(m);
    const { body: dups } = await api(`/api/images/${encodeURIComponent(id)}/duplicates?threshold=${DUP_DEFAULT}`);
    if (stale(gen)) return;
    const same = dups.filter((r) => r.same_picture).length;
    $("viewer-dups-note").textContent = dups.length
      ? `(${dups.length}, similarity ≥ ${DUP_DEFAULT}${same ? `; ${same} of them the same picture` : ""})` : `(none at similarity ≥ ${DUP_DEFAULT})`;
    $("viewer-dups").replaceChildren(...dups.map((r, i) => card(r, i, { enterOpens: true })));
  } catch (e) {
    if (!stale(gen)) showError(`Cannot open the image: ${e.message}`);
  }
}
async function removeImage(m) {
  const key = $("api-key").value.trim() || sessionStorage.getItem("imgsearch-key") || "";
  if (!key) { showError("Removing needs the server's API key (IMGSEARCH_API_KEY)."); return; }
  try {
    await api(`/api/images/${encodeURIComponent(m.id)}`, { method: "DELETE", headers: { "X-API-Key": key } });
    sessionStorage.setItem("imgsearch-key", key);
    await loadStats();
    go("browse", filters());
  } catch (e) {
    showError(`Remove failed: ${e.message}`);
  }
}

// -- duplicates ------------------------------------------------------------------------------------------------
// Default: the same picture, verified from the pixels (identical files, edited copies), with the one to keep.
// mode=similar: look-alikes at a cosine threshold (they chain into large groups: a browsing aid).
const DUP_DEFAULT = "0.70"; // the look-alike default of `imgsearch duplicates --no-verify`
let dupShown = 0;
async function runDuplicates(params, append = false) {
  const similar = params.get("mode") === "similar";
  const t = Number(params.get("threshold") || DUP_DEFAULT).toFixed(2);
  $("dup-mode").value = similar ? "similar" : "same";
  $("threshold-label").hidden = !similar;
  $("threshold").value = t;
  $("threshold-out").textContent = t;
  const query = similar ? `mode=similar&threshold=${t}` : "mode=same";
  $("export-csv").href = `/api/duplicates?${query}&format=csv`;
  $("export-json").href = `/api/duplicates?${query}&limit=500`;
  const status = $("dups-status"), box = $("groups");
  if (!append) { dupShown = 0; box.replaceChildren(); }
  const gen = generation;
  showError("");
  setStatus(status, similar ? "Finding look-alikes…" : "Finding duplicates: checking candidates' pixels…", true);
  try {
    let resp, body;
    for (;;) {
      ({ resp, body } = await api(`/api/duplicates?${query}&offset=${dupShown}&limit=20`));
      if (stale(gen)) return;
      if (resp.status !== 202) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    for (const g of body.groups) box.append(similar ? groupRow(g, ++dupShown) : verifiedRow(g, ++dupShown));
    const groups = `${body.groups_total} group${body.groups_total === 1 ? "" : "s"}, ${body.images_in_groups} of ${body.images} images`;
    const skipped = !similar && body.skipped.length ? ` · ${body.skipped.length} unreadable now, skipped (${body.skipped[0].path}: ${body.skipped[0].reason})` : "";
    setStatus(status, similar
      ? (body.groups_total ? `${groups}, at similarity ≥ ${t} (largest first)` : `No look-alikes at similarity ≥ ${t}.`)
      : (body.groups_total ? `${groups}: the same picture (largest group first)${skipped}` : `No duplicates: no two images are the same picture.${skipped}`));
    $("more-groups").hidden = dupShown >= body.groups_total;
    $("more-groups").onclick = () => runDuplicates(params, true);
  } catch (e) {
    if (stale(gen)) return;
    setStatus(status, "");
    showError(`Duplicates failed: ${e.message}`);
  }
}
function dupFigure(im, note, keep) {
  const fig = el("figure", { className: keep ? "keep" : "" });
  const img = el("img", { loading: "lazy", src: im.thumbnail_url, alt: im.name });
  img.addEventListener("click", () => go("viewer", {}, im.id));
  fig.append(img, el("figcaption", {}, el("span", { className: "name", textContent: im.name }),
    el("span", { textContent: `${im.width}×${im.height} · ${kib(im.bytes || 0)}${keep ? " · keep" : ""}` }),
    ...(note ? [el("span", { className: "evidence", textContent: note })] : [])));
  return fig;
}
const EDIT_WORDS = { identical: "identical file", scaled: "scaled", cropped: "cropped", border: "border added or removed", band: "caption strip", reencoded: "re-encoded" };
function evidenceText(im) {
  if (im.relation === "representative") return "the largest: others checked against it";
  const ev = im.evidence || {};
  const edits = (ev.edits || []).map((e) => EDIT_WORDS[e] || e);
  if (im.relation === "identical") return "identical file";
  return `same picture${edits.length ? ": " + edits.join(", ") : ", re-encoded"} (match ${Number(ev.ncc || 0).toFixed(2)})`;
}
function verifiedRow(g, n) {
  const row = el("section", { className: "group" });
  const what = g.kind === "identical" ? "identical files" : "the same picture, edited";
  row.append(el("h4", { textContent: `Group ${n}: ${g.size} images · ${what}` }));
  const strip = el("div", { className: "strip" });
  g.images.forEach((im) => strip.append(dupFigure(im, evidenceText(im), im.id === g.keep_id)));
  row.append(strip);
  return row;
}
function groupRow(g, n) {
  const row = el("section", { className: "group" });
  row.append(el("h4", { textContent: `Group ${n}: ${g.size} images, similarity ≥ ${g.min_similarity.toFixed(3)}` }));
  const strip = el("div", { className: "strip" });
  g.images.forEach((im, i) => strip.append(dupFigure(im, i === 0 ? "largest" : "", false)));
  row.append(strip);
  return row;
}

// -- status ----------------------------------------------------------------------------------------------------
async function runStatus() {
  const gen = generation;
  showError("");
  try {
    const { body: s } = await api("/api/status");
    if (stale(gen)) return;
    const facts = [["images", s.count.toLocaleString()], ["collection", s.collection || "(none yet)"], ["model", s.model],
      ["dimensions", s.dim], ["PCA reducer", s.reducer || "none"], ["index", `${s.index_type || "?"} ${JSON.stringify(s.index_params)}`],
      ["search by", [s.text ? "text" : "", s.tags ? "tags" : "", "image"].filter(Boolean).join(", ")], ["database", s.db]];
    $("status-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: String(v) })]));
    const r = s.last_run;
    $("status-run").replaceChildren(...(r ? [["finished", new Date(r.finished).toLocaleString()], ["source", r.source],
      ["engine", r.engine], ["files", `${r.new} new, ${r.changed} changed, ${r.unchanged} unchanged, ${r.failed} failed`],
      ["embedded", `${r.embedded} in ${r.seconds} s`]] : [["", "no run recorded (runs of this version record themselves)"]])
      .flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: String(v) })]));
    $("failures-count").textContent = `(${s.failures_total})`;
    $("failures").tBodies[0].replaceChildren(...(s.failures.length ? s.failures.map((f) =>
      el("tr", {}, el("td", { textContent: decodeURIComponent(f.path.replace(/^file:\/\//, "")) }), el("td", { textContent: f.error })))
      : [el("tr", {}, el("td", { colSpan: 2, className: "muted", textContent: "no failed files" }))]));
  } catch (e) {
    if (!stale(gen)) showError(`Status unavailable: ${e.message}`);
  }
}

// -- router ----------------------------------------------------------------------------------------------------
// Each render starts a generation; an answer that arrives after a newer render is dropped, so fast key presses
// (next, next) cannot leave an older image's answer on screen.
let generation = 0;
const stale = (gen) => gen !== generation;
function render() {
  generation += 1;
  const { view, arg, params } = route();
  for (const v of views) $(v === "viewer" ? "viewer" : `view-${v}`).hidden = v !== view;
  document.querySelectorAll("nav a[data-view]").forEach((a) => a.classList.toggle("current", a.dataset.view === view));
  setFilters(params);
  if (view === "search") runSearch(params);
  else if (view === "browse") runBrowse(params);
  else if (view === "viewer") runViewer(decodeURIComponent(arg || ""));
  else if (view === "duplicates") runDuplicates(params);
  else if (view === "status") runStatus();
  document.title = `imgsearch — ${view === "viewer" ? "image" : view}`;
}

async function loadStats() {
  try {
    const { body: s } = await api("/api/stats");
    caps = { text: !!s.text, tags: !!s.tags, count: s.count };
    $("stats").textContent = `${s.count.toLocaleString()} images indexed · model ${s.model} (${s.dim}-d)`;
    $("q").placeholder = s.text ? "Describe what you look for, e.g. a dog on a beach"
      : s.tags ? "Search by tag, e.g. espresso" : "this collection has no tags or text search";
    $("q").disabled = !s.text && !s.tags;
    $("q-mode").textContent = s.text ? "words" + (s.tags ? " (tag:word for a tag)" : "") : s.tags ? "searches auto-tags" : "";
  } catch (e) {
    $("stats").textContent = "index status unavailable";
  }
}

function wire() {
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); searchWords($("q").value); });
  $("pick").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => useFile($("file").files[0]));
  $("drop").addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  ["dragenter", "dragover"].forEach((ev) => document.addEventListener(ev, (e) => { e.preventDefault(); $("drop").classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) => document.addEventListener(ev, (e) => { e.preventDefault(); $("drop").classList.remove("over"); }));
  document.addEventListener("drop", (e) => useFile(e.dataTransfer.files[0]));
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (!item) return;
    e.preventDefault();
    const blob = item.getAsFile();
    useFile(new File([blob], blob.name && blob.name !== "image.png" ? blob.name : "pasted image", { type: blob.type }));
  });
  $("k").addEventListener("change", () => {
    const { view, params } = route();
    if (view === "search") { params.set("k", $("k").value); go("search", Object.fromEntries(params)); }
  });
  $("filters-toggle").addEventListener("click", () => {
    const f = $("filters");
    f.hidden = !f.hidden;
    $("filters-toggle").setAttribute("aria-expanded", String(!f.hidden));
  });
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    const { view, params } = route();
    const keep = Object.fromEntries([...params].filter(([k]) => !filterFields.includes(k) && k !== "offset"));
    go(view === "viewer" ? "browse" : view, { ...keep, ...filters() });
  });
  $("filters-clear").addEventListener("click", () => {
    for (const f of filterFields) $(filterInputs[f]).value = "";
    $("filters").requestSubmit();
  });
  $("sort").addEventListener("change", () => go("browse", browseParams()));
  $("threshold").addEventListener("input", () => { $("threshold-out").textContent = Number($("threshold").value).toFixed(2); });
  $("threshold").addEventListener("change", () => go("duplicates", { mode: "similar", threshold: Number($("threshold").value).toFixed(2) }));
  $("dup-mode").addEventListener("change", () => go("duplicates", $("dup-mode").value === "similar" ? { mode: "similar", threshold: DUP_DEFAULT } : {}));
  $("viewer-back").addEventListener("click", () => history.back());
  let suggestTimer = null;
  $("q").addEventListener("input", () => {
    clearTimeout(suggestTimer);
    const raw = $("q").value, v = raw.replace(/^tag:/i, "").trim();
    if (!caps.tags || v.length < 2 || (caps.text && !/^tag:/i.test(raw))) return;
    suggestTimer = setTimeout(async () => {
      try {
        const { body } = await api(`/api/tags?${new URLSearchParams({ prefix: v, limit: 12 })}`);
        $("tag-list").replaceChildren(...body.tags.map((t) => el("option", { value: caps.text ? `tag:${t}` : t })));
      } catch (_) { /* suggestions are optional */ }
    }, 150);
  });
  // keyboard: "/" focuses the search box, arrows move between cards, Esc leaves the image view; in the image view
  // left/right go to the previous/next image of the last grid
  document.addEventListener("keydown", (e) => {
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement?.tagName);
    if (e.key === "/" && !typing) { e.preventDefault(); $("q").focus(); return; }
    const { view, arg } = route();
    if (e.key === "Escape" && view === "viewer") { history.back(); return; }
    if (typing) return;
    if (view === "viewer" && (e.key === "ArrowRight" || e.key === "ArrowLeft")) {
      const i = gridOrder.indexOf(decodeURIComponent(arg || ""));
      const j = i + (e.key === "ArrowRight" ? 1 : -1);
      if (i >= 0 && j >= 0 && j < gridOrder.length) go("viewer", {}, gridOrder[j]);
      return;
    }
    const cardEl = document.activeElement?.closest?.(".card");
    if (!cardEl || !["ArrowRight", "ArrowLeft", "ArrowDown", "ArrowUp"].includes(e.key)) return;
    const cards = [...cardEl.parentElement.querySelectorAll(".card")];
    const i = cards.indexOf(cardEl);
    const perRow = Math.max(1, Math.round(cardEl.parentElement.clientWidth / cardEl.offsetWidth));
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow }[e.key];
    const next = cards[Math.min(cards.length - 1, Math.max(0, i + step))];
    e.preventDefault();
    next.focus();
  });
  window.addEventListener("hashchange", render);
}

wire();
loadStats().then(() => {
  // links of the first page (?text= / ?tag=) still open their search
  const q = new URLSearchParams(location.search);
  if (!location.hash && (q.get("text") || q.get("tag"))) {
    go("search", q.get("text") ? { text: q.get("text") } : { q_tag: q.get("tag") });
    return;
  }
  render();
});
