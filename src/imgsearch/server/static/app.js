// imgsearch page: upload or drop an image, choose k, see the most similar images; click one for more like it.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const drop = $("drop"), fileInput = $("file"), preview = $("preview"), hint = $("drop-hint");
  const kSelect = $("k"), statusEl = $("status"), errorEl = $("error"), grid = $("results");
  const queryLabel = $("query-label"), statsEl = $("stats");
  let lastQuery = null; // {kind: "file", file} or {kind: "id", id, name}
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
        const form = new FormData();
        form.append("file", query.file);
        form.append("k", k);
        resp = await fetch("/api/search", { method: "POST", body: form, signal: ctrl.signal });
      } else {
        resp = await fetch(`/api/images/${encodeURIComponent(query.id)}/similar?k=${k}`, { signal: ctrl.signal });
      }
      let body = null;
      try { body = await resp.json(); } catch (_) { /* not JSON */ }
      if (!resp.ok) throw new Error(detailOf(body, resp));
      render(body);
      const what = query.kind === "file" ? query.file.name : `more like ${query.name}`;
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
      const card = document.createElement("button");
      card.type = "button";
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
      meta.append(name, score);
      card.append(img, meta);
      card.addEventListener("click", () => {
        preview.src = r.thumbnail_url;
        preview.hidden = false;
        hint.hidden = true;
        queryLabel.textContent = `More like ${r.name}`;
        run({ kind: "id", id: r.id, name: r.name });
      });
      return card;
    });
    grid.replaceChildren(...cards);
  }

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

  loadStats();
})();
