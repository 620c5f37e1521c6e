// imgsearch page: upload or drop an image, or type words (CLIP models) or a tag keyword; choose k; see the most
// similar images; click one for more like it, open its details, click a tag to search by it.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const drop = $("drop"), fileInput = $("file"), preview = $("preview"), hint = $("drop-hint");
  const kSelect = $("k"), statusEl = $("status"), errorEl = $("error"), grid = $("results");
  const queryLabel = $("query-label"), statsEl = $("stats");
  const form = $("search-form"), qInput = $("q"), qMode = $("q-mode"), tagList = $("tag-list");
  const viewer = $("viewer");
  let lastQuery = null; // {kind: "file", file} | {kind: "id", id, name} | {kind: "text", text} | {kind: "tag", tag}
  let caps = { text: false, tags: false };
  let inflight = null;

  function setStatus(text, loading = false) {
    statusEl.textContent = text;
    statusEl.classList.toggle("loading", loading);
  }
  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = !text;
  }

  async function loadStats() {
    try {
      const r = await fetch("/api/stats");
      const s = await r.json();
      if (!r.ok) throw new Error(s.detail || r.statusText);
      statsEl.textContent = `${s.count.toLocaleString()} images indexed · model ${s.model} (${s.dim}-d)`;
      caps = { text: !!s.text, tags: !!s.tags };
      qInput.placeholder = caps.text ? "Describe what you look for, e.g. a dog on a beach"
        : caps.tags ? "Search by tag, e.g. espresso" : "this collection has no tags or text search";
      qInput.disabled = !caps.text && !caps.tags;
      qMode.textContent = caps.text ? "searches by words" + (caps.tags ? " (tag:word for a tag)" : "")
        : caps.tags ? "searches the images' auto-tags" : "";
    } catch (e) {
      statsEl.textContent = "index status unavailable";
    }
  }

  function detailOf(body, resp) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
    return `${resp.status} ${resp.statusText}`;
  }

  async function run(query) {
    lastQuery = query;
    if (inflight) inflight.abort();
    const ctrl = new AbortController();
    inflight = ctrl;
    const k = kSelect.value;
    showError("");
    setStatus("Searching…", true);
    grid.setAttribute("aria-busy", "true");
    try {
      let resp;
      if (query.kind === "file") {
        const body = new FormData();
        body.append("file", query.file);
        body.append("k", k);
        resp = await fetch("/api/search", { method: "POST", body, signal: ctrl.signal });
      } else if (query.kind === "text" || query.kind === "tag") {
        const params = new URLSearchParams({ [query.kind]: query[query.kind], k });
        history.replaceState(null, "", `?${new URLSearchParams({ [query.kind]: query[query.kind] })}`);
        resp = await fetch(`/api/search?${params}`, { signal: ctrl.signal });
      } else {
        resp = await fetch(`/api/images/${encodeURIComponent(query.id)}/similar?k=${k}`, { signal: ctrl.signal });
      }
      let body = null;
      try { body = await resp.json(); } catch (_) { /* not JSON */ }
      if (!resp.ok) throw new Error(detailOf(body, resp));
      render(body);
      const what = query.kind === "file" ? query.file.name : query.kind === "text" ? `"${query.text}"`
        : query.kind === "tag" ? `tag ${query.tag}` : `more like ${query.name}`;
      setStatus(body.message || `${body.results.length} results for ${what} in ${body.took_ms.toFixed(0)} ms`);
    } catch (e) {
      if (e.name === "AbortError") return;
      grid.replaceChildren();
      setStatus("");
      showError(`Search failed: ${e.message}`);
    } finally {
      if (inflight === ctrl) inflight = null;
      grid.removeAttribute("aria-busy");
    }
  }

  function render(body) {
    const cards = body.results.map((r, i) => {
      const card = document.createElement("div");
      card.setAttribute("role", "button");
      card.tabIndex = 0;
      card.className = "card";
      card.dataset.id = r.id;
      card.title = `${r.name}\nscore ${r.score.toFixed(4)}\nclick for more like this`;
      const img = document.createElement("img");
      img.loading = "lazy";
      img.alt = r.name;
      img.src = r.thumbnail_url;
      const meta = document.createElement("div");
      meta.className = "meta";
      const name = document.createElement("span");
      name.className = "name";
      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = `${i + 1}.`;
      name.append(rank, r.name);
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = r.score.toFixed(3);
      const open = document.createElement("button");
      open.type = "button";
      open.className = "open";
      open.textContent = "details";
      open.setAttribute("aria-label", `details of ${r.name}`);
      open.addEventListener("click", (e) => { e.stopPropagation(); openViewer(r.id); });
      meta.append(name, score, open);
      card.append(img, meta);
      if (r.tags && r.tags.length) card.append(tagChips(r.tags.slice(0, 3), r.tag_scores));
      card.addEventListener("click", () => moreLike(r.id, r.name, r.thumbnail_url));
      card.addEventListener("keydown", (e) => { if (e.key === "Enter") moreLike(r.id, r.name, r.thumbnail_url); });
      return card;
    });
    grid.replaceChildren(...cards);
  }

  function moreLike(id, name, thumb) {
    preview.src = thumb;
    preview.hidden = false;
    hint.hidden = true;
    queryLabel.textContent = `More like ${name}`;
    run({ kind: "id", id, name });
  }

  function tagChips(tags, scores) {
    const box = document.createElement("div");
    box.className = "tags";
    tags.forEach((t, i) => {
      const chip = document.createElement("span");
      chip.className = "tag";
      chip.setAttribute("role", "link");
      chip.textContent = t;
      if (scores && scores[i] !== undefined) chip.title = `${t}: ${(scores[i] * 100).toFixed(0)}%, click to search`;
      chip.addEventListener("click", (e) => { e.stopPropagation(); searchWords(`tag:${t}`); });
      box.append(chip);
    });
    return box;
  }

  function searchWords(raw) {
    const value = raw.trim();
    if (!value) return;
    if (viewer.open) viewer.close();
    const tag = value.toLowerCase().startsWith("tag:") ? value.slice(4).trim() : null;
    const q = tag !== null ? { kind: "tag", tag } : caps.text ? { kind: "text", text: value } : { kind: "tag", tag: value };
    qInput.value = q.kind === "tag" && caps.text ? `tag:${q.tag}` : (q.text || q.tag);
    preview.hidden = true;
    hint.hidden = false;
    queryLabel.textContent = "";
    run(q);
  }

  async function openViewer(id) {
    try {
      const r = await fetch(`/api/images/${encodeURIComponent(id)}/meta`);
      const m = await r.json();
      if (!r.ok) throw new Error(detailOf(m, r));
      $("viewer-img").src = m.image_url;
      $("viewer-img").alt = m.name;
      $("viewer-name").textContent = m.name;
      const rows = [["path", m.path], ["size", `${m.width} × ${m.height} px, ${(m.bytes / 1024).toFixed(0)} KiB`],
        ["format", m.format || "?"], ["modified", m.mtime ? new Date(m.mtime).toLocaleString() : "?"]];
      $("viewer-meta").replaceChildren(...rows.flatMap(([k, v]) => {
        const dt = document.createElement("dt"); dt.textContent = k;
        const dd = document.createElement("dd"); dd.textContent = v;
        return [dt, dd];
      }));
      const tags = $("viewer-tags");
      tags.replaceChildren();
      if (m.tags.length) tags.replaceWith(Object.assign(tagChips(m.tags, m.tag_scores), { id: "viewer-tags", className: "tags big" }));
      else tags.textContent = caps.tags ? "no tags" : "";
      $("viewer-similar").onclick = () => { viewer.close(); moreLike(m.id, m.name, m.thumbnail_url); };
      viewer.showModal();
    } catch (e) {
      showError(`Cannot open the image: ${e.message}`);
    }
  }

  let suggestTimer = null;
  qInput.addEventListener("input", () => {
    clearTimeout(suggestTimer);
    const v = qInput.value.replace(/^tag:/i, "").trim();
    if (!caps.tags || v.length < 2 || (caps.text && !/^tag:/i.test(qInput.value))) return;
    suggestTimer = setTimeout(async () => {
      try {
        const r = await fetch(`/api/tags?${new URLSearchParams({ prefix: v, limit: 12 })}`);
        const body = await r.json();
        tagList.replaceChildren(...body.tags.map((t) => Object.assign(document.createElement("option"),
          { value: caps.text ? `tag:${t}` : t })));
      } catch (_) { /* suggestions are optional */ }
    }, 150);
  });
  form.addEventListener("submit", (e) => { e.preventDefault(); searchWords(qInput.value); });

  function useFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError(`${file.name} is not an image`);
      return;
    }
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    hint.hidden = true;
    queryLabel.textContent = file.name;
    run({ kind: "file", file });
  }

  fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); } });
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => useFile(e.dataTransfer.files[0]));
  kSelect.addEventListener("change", () => { if (lastQuery) run(lastQuery); });

  loadStats().then(() => {  // a shared link: ?text=... or ?tag=...
    const params = new URLSearchParams(location.search);
    if (params.get("text")) searchWords(params.get("text"));
    else if (params.get("tag")) searchWords(`tag:${params.get("tag")}`);
  });
})();
