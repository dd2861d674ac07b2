/* stemnmf report explorer: maps, patterns, weights, clusters and regions of one run.
   Reads the JSON in #stemnmf-data (arrays as base64 of little-endian bytes); makes no request. */
(function () {
  "use strict";
  var node = document.getElementById("stemnmf-data");
  if (!node) { return; }
  var D = JSON.parse(node.textContent);
  var el = function (id) { return document.getElementById(id); };
  var MAP_SIDE = 384, PATTERN_SIDE = 288;

  // ---- decoding ---------------------------------------------------------------------------
  function bytes(text) {
    var bin = atob(text), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }
  function typed(text, dtype) {
    var u8 = bytes(text);
    if (dtype === "i32") { return new Int32Array(u8.buffer); }
    if (dtype === "f32") { return new Float32Array(u8.buffer); }
    if (dtype === "u16") { return new Uint16Array(u8.buffer); }
    return u8;
  }
  var cache = {};
  function mapValues(m) {
    if (!cache[m.name]) { cache[m.name] = typed(m.data, m.dtype); }
    return cache[m.name];
  }
  var LUT = {};
  Object.keys(D.colormaps).forEach(function (name) { LUT[name] = bytes(D.colormaps[name]); });

  var SY = D.scan[0], SX = D.scan[1];
  var nav = D.navigator ? {shape: D.navigator.shape, stride: D.navigator.stride, bin: D.navigator.bin,
    scales: typed(D.navigator.scales, "f32"), codes: null} : null;
  if (nav) {  // one scale for the scan: the brightest pattern's (an empty pattern's scale is 1, 1)
    var top = 0;
    for (var j = 0; j < nav.scales.length; j += 2) { if (nav.scales[j] !== nav.scales[j + 1]) { top = Math.max(top, nav.scales[j + 1]); } }
    nav.scale = top > 0 ? [top / 1e4, top] : [1, 1];
  }
  // found Bragg disks at the navigator's positions: counts (ny, nx), then (qy, qx) x 8 in detector pixels
  var disks = D.disks ? {counts: typed(D.disks.counts, "u8"), coords: null, start: null} : null;
  function disksAt(k) {
    if (!disks.start) {
      disks.coords = typed(D.disks.coords, "u16"); disks.start = new Uint32Array(disks.counts.length + 1);
      for (var i = 0; i < disks.counts.length; i++) { disks.start[i + 1] = disks.start[i] + disks.counts[i]; }
    }
    var out = [];
    for (var j = disks.start[k]; j < disks.start[k + 1]; j++) { out.push([disks.coords[2 * j] / 8, disks.coords[2 * j + 1] / 8]); }
    return out;
  }
  if (!disks) { el("ex-disks-label").remove(); }
  function navCodes() { if (!nav.codes) { nav.codes = bytes(D.navigator.data); } return nav.codes; }
  var clusters = {};
  Object.keys(D.clusters || {}).forEach(function (key) { clusters[key] = D.clusters[key]; });
  function byName(part) { return D.maps.filter(function (m) { return m.name.indexOf(part) === 0; })[0]; }
  var labelsMap = byName("clusters"), regionsMap = byName("regions");
  var components = D.maps.filter(function (m) { return m.component !== undefined; });
  var ratio = D.overlap ? typed(D.overlap.ratio, "f32") : null;

  var state = {map: 0, y: Math.floor(SY / 2), x: Math.floor(SX / 2), shown: null, region: null,
    threshold: Math.fround(Number(el("ex-threshold").value) / 100), sort: null, descending: false, filter: ""};

  // ---- maps ----------------------------------------------------------------------------------
  function sizeCanvas(canvas, overlay, h, w, side) {
    var scale = Math.max(1, Math.floor(side / Math.max(h, w)));
    if (Math.max(h, w) * scale < side * 0.6) { scale = side / Math.max(h, w); }
    canvas.width = w; canvas.height = h;
    canvas.style.width = (w * scale) + "px"; canvas.style.height = (h * scale) + "px";
    if (overlay) {
      overlay.width = Math.round(w * scale); overlay.height = Math.round(h * scale);
      overlay.style.width = canvas.style.width; overlay.style.height = canvas.style.height;
    }
    return scale;
  }
  var mapCanvas = el("ex-map-canvas"), mapOverlay = el("ex-map-overlay");
  var mapScale = sizeCanvas(mapCanvas, mapOverlay, SY, SX, MAP_SIDE);

  function currentMap() { return D.maps[state.map]; }
  function mapCmap(m) { return el("ex-map-cmap").value || m.cmap || "viridis"; }
  var OVERLAP_ON = [240, 228, 66], OVERLAP_OFF = [30, 30, 30], NONE = [0, 0, 0];

  function drawMap() {
    var m = currentMap(), n = SY * SX;
    var ctx = mapCanvas.getContext("2d"), img = ctx.createImageData(SX, SY), px = img.data;
    el("ex-overlap-control").style.opacity = m.kind === "overlap" ? "1" : "0.6";
    var i, c;
    if (m.kind === "continuous") {
      var v = mapValues(m), lut = LUT[mapCmap(m)];
      for (i = 0; i < n; i++) { c = v[i] * 3; px[4 * i] = lut[c]; px[4 * i + 1] = lut[c + 1]; px[4 * i + 2] = lut[c + 2]; px[4 * i + 3] = 255; }
    } else if (m.kind === "labels") {
      var lab = mapValues(m);
      for (i = 0; i < n; i++) {
        c = lab[i] >= 0 && lab[i] < m.colors.length ? m.colors[lab[i]] : NONE;
        px[4 * i] = c[0]; px[4 * i + 1] = c[1]; px[4 * i + 2] = c[2]; px[4 * i + 3] = 255;
      }
    } else if (m.kind === "rgb") {
      var rgb = mapValues(m);
      for (i = 0; i < n; i++) { px[4 * i] = rgb[3 * i]; px[4 * i + 1] = rgb[3 * i + 1]; px[4 * i + 2] = rgb[3 * i + 2]; px[4 * i + 3] = 255; }
    } else if (m.kind === "overlap") {
      var count = 0;
      for (i = 0; i < n; i++) {
        var on = ratio[i] >= state.threshold;
        c = on ? OVERLAP_ON : OVERLAP_OFF; count += on ? 1 : 0;
        px[4 * i] = c[0]; px[4 * i + 1] = c[1]; px[4 * i + 2] = c[2]; px[4 * i + 3] = 255;
      }
      el("ex-overlap-fraction").textContent = (100 * count / n).toFixed(1) + " % of positions at or above it";
      el("ex-overlap-fraction").dataset.count = String(count);
    }
    ctx.putImageData(img, 0, 0);
    drawKey(m);
    drawMapOverlay();
  }

  function drawKey(m) {
    var key = el("ex-map-key"), ctx, i;
    key.width = 360; key.height = 46;
    ctx = key.getContext("2d"); ctx.clearRect(0, 0, key.width, key.height);
    ctx.font = "11px sans-serif"; ctx.fillStyle = "#222";
    if (m.kind === "continuous") {
      var lut = LUT[mapCmap(m)];
      for (i = 0; i < 256; i++) { ctx.fillStyle = "rgb(" + lut[3 * i] + "," + lut[3 * i + 1] + "," + lut[3 * i + 2] + ")"; ctx.fillRect(10 + i, 4, 1, 16); }
      ctx.fillStyle = "#222"; ctx.textAlign = "left"; ctx.fillText(fmt(m.min), 10, 34);
      ctx.textAlign = "right"; ctx.fillText(fmt(m.max) + (m.unit ? " " + m.unit : ""), 266, 34);
      ctx.textAlign = "left"; ctx.fillText(m.name, 272, 16);
    } else if (m.kind === "labels") {
      var shown = Math.min(m.n, 16), w = 340 / Math.max(shown, 1);
      for (i = 0; i < shown; i++) {
        var c = m.colors[i]; ctx.fillStyle = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")"; ctx.fillRect(10 + i * w, 4, w - 2, 14);
        ctx.fillStyle = "#222"; ctx.fillText(m.names[i], 10 + i * w, 32);
      }
      ctx.fillText("black: none" + (m.n > shown ? "; first " + shown + " of " + m.n + " shown" : ""), 10, 44);
    } else if (m.kind === "overlap") {
      ctx.fillStyle = "rgb(" + OVERLAP_ON.join(",") + ")"; ctx.fillRect(10, 4, 16, 14);
      ctx.fillStyle = "rgb(" + OVERLAP_OFF.join(",") + ")"; ctx.fillRect(150, 4, 16, 14);
      ctx.fillStyle = "#222"; var t = Math.round(state.threshold * 100);
      ctx.fillText("ratio \u2265 " + t + " %", 30, 15); ctx.fillText("ratio < " + t + " %", 170, 15);
    } else if (m.kind === "rgb" && m.key_image) {
      var k = typed(m.key_image, "u8"), side = m.key_side, img = ctx.createImageData(side, side);
      for (i = 0; i < side * side; i++) { img.data[4 * i] = k[3 * i]; img.data[4 * i + 1] = k[3 * i + 1]; img.data[4 * i + 2] = k[3 * i + 2]; img.data[4 * i + 3] = 255; }
      key.height = side + 4; ctx.putImageData(img, 4, 2);
      ctx.fillStyle = "#222"; ctx.fillText("[001]", side + 8, side); ctx.fillText("[101]", side + 48, side); ctx.fillText("[111]", side + 8, 12);
      ctx.fillText("IPF-Z (beam direction in the crystal)", side + 8, side / 2 + 4);
    }
  }

  function drawMapOverlay() {
    var ctx = mapOverlay.getContext("2d"), s = mapScale;
    ctx.clearRect(0, 0, mapOverlay.width, mapOverlay.height);
    if (state.region !== null && regionsMap) {
      var lab = mapValues(regionsMap), r = state.region;
      ctx.strokeStyle = "#ff00ff"; ctx.lineWidth = 2; ctx.beginPath();
      for (var y = 0; y < SY; y++) {
        for (var x = 0; x < SX; x++) {
          if (lab[y * SX + x] !== r) { continue; }
          if (y === 0 || lab[(y - 1) * SX + x] !== r) { ctx.moveTo(x * s, y * s); ctx.lineTo((x + 1) * s, y * s); }
          if (y === SY - 1 || lab[(y + 1) * SX + x] !== r) { ctx.moveTo(x * s, (y + 1) * s); ctx.lineTo((x + 1) * s, (y + 1) * s); }
          if (x === 0 || lab[y * SX + x - 1] !== r) { ctx.moveTo(x * s, y * s); ctx.lineTo(x * s, (y + 1) * s); }
          if (x === SX - 1 || lab[y * SX + x + 1] !== r) { ctx.moveTo((x + 1) * s, y * s); ctx.lineTo((x + 1) * s, (y + 1) * s); }
        }
      }
      ctx.stroke();
    }
    var p = state.shown || state;
    ctx.lineWidth = 2; ctx.strokeStyle = "#000"; ctx.strokeRect(p.x * s - 2, p.y * s - 2, s + 4, s + 4);
    ctx.lineWidth = 1; ctx.strokeStyle = "#fff"; ctx.strokeRect(p.x * s - 1, p.y * s - 1, s + 2, s + 2);
  }

  // ---- patterns -----------------------------------------------------------------------------
  // grey levels of the 256 codes of a pattern stored on scale `own` (f, vmax), shown on scale `target`
  function levels(own, target) {
    var lut = new Uint8Array(256), mode = el("ex-scale").value, gamma = Number(el("ex-gamma").value);
    var L = Math.log1p(own[1] / own[0]), T = Math.log1p(target[1] / target[0]);
    for (var c = 0; c < 256; c++) {
      var v = own[0] * Math.expm1(c / 255 * L);
      var g = mode === "gamma" ? 255 * Math.pow(v / target[1], gamma) : 255 * Math.log1p(v / target[0]) / T;
      lut[c] = Math.max(0, Math.min(255, Math.round(g)));
    }
    return lut;
  }
  function displayCodes(codes, offset, count, own, target) {
    var out = new Uint8Array(count), i, lut = levels(own, target);
    for (i = 0; i < count; i++) { out[i] = lut[codes[offset + i]]; }
    if (el("ex-stretch").checked) {
      var lo = 255, hi = 0;
      for (i = 0; i < count; i++) { lo = Math.min(lo, out[i]); hi = Math.max(hi, out[i]); }
      if (hi > lo) { for (i = 0; i < count; i++) { out[i] = Math.round(255 * (out[i] - lo) / (hi - lo)); } }
    }
    return out;
  }
  function paint(canvas, values, h, w, cmap) {
    canvas.width = w; canvas.height = h;
    var ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h), lut = LUT[cmap];
    for (var i = 0; i < h * w; i++) {
      var c = values[i] * 3;
      img.data[4 * i] = lut[c]; img.data[4 * i + 1] = lut[c + 1]; img.data[4 * i + 2] = lut[c + 2]; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }
  function navIndex(y, x) {
    var s = nav.stride, ny = nav.shape[0], nx = nav.shape[1];
    return [Math.min(ny - 1, Math.round(y / s)), Math.min(nx - 1, Math.round(x / s))];
  }
  var patternCanvas = el("ex-pattern-canvas"), patternOverlay = el("ex-pattern-overlay");
  var patternScale = nav ? sizeCanvas(patternCanvas, patternOverlay, nav.shape[2], nav.shape[3], PATTERN_SIDE) : 1;

  function drawPattern(p) {
    if (!nav) { el("ex-pattern-note").textContent = "These results hold no navigator patterns (run them again to add them)."; return; }
    var by = nav.shape[2], bx = nav.shape[3], at = navIndex(p.y, p.x);
    var offset = (at[0] * nav.shape[1] + at[1]) * by * bx;
    var k = at[0] * nav.shape[1] + at[1];
    var shown = displayCodes(navCodes(), offset, by * bx, [nav.scales[2 * k], nav.scales[2 * k + 1]], nav.scale);
    paint(patternCanvas, shown, by, bx, el("ex-pattern-cmap").value);
    el("ex-pattern-note").textContent = "position (y " + at[0] * nav.stride + ", x " + at[1] * nav.stride + ")" +
      (nav.stride > 1 ? ", the nearest of every " + nav.stride + "th position kept" : "") + "; detector binned " + nav.bin +
      " x " + nav.bin + "; " + (el("ex-scale").value === "log" ? "log scale" : "gamma " + el("ex-gamma").value) +
      ", 0 .. " + fmt(nav.scale[1]) + " per detector pixel (mean over each bin)";
    patternCanvas.dataset.position = at[0] * nav.stride + "," + at[1] * nav.stride;
    drawPatternOverlay(p);
    drawPatternKey();
  }
  function drawPatternOverlay(p) {
    var ctx = patternOverlay.getContext("2d"), s = patternScale, half = 0.5 / nav.bin;
    ctx.clearRect(0, 0, patternOverlay.width, patternOverlay.height);
    var ov = D.overlay || {};
    if (el("ex-rings").checked) {
      ctx.lineWidth = 1;
      (ov.rings || []).forEach(function (ring, k) {
        ctx.strokeStyle = ["#56b4e9", "#e69f00", "#009e73", "#f0e442", "#cc79a7"][Math.floor(k / 2) % 5];
        ctx.beginPath();
        ring.forEach(function (pt, i) { var X = (pt[1] + half) * s, Y = (pt[0] + half) * s; if (i) { ctx.lineTo(X, Y); } else { ctx.moveTo(X, Y); } });
        ctx.stroke();
      });
      ctx.strokeStyle = "rgba(255,255,255,0.45)"; ctx.beginPath();
      (ov.sectors || []).forEach(function (line) {
        ctx.moveTo((line[0][1] + half) * s, (line[0][0] + half) * s); ctx.lineTo((line[1][1] + half) * s, (line[1][0] + half) * s);
      });
      ctx.stroke();
    }
    var found = disks && el("ex-disks").checked ? disksAt(navIndex(p.y, p.x)[0] * nav.shape[1] + navIndex(p.y, p.x)[1]) : [];
    ctx.strokeStyle = "#00ffff"; ctx.lineWidth = 1.5;
    found.forEach(function (q) {  // detector pixel q sits at (q + 0.5) / bin binned pixels
      ctx.beginPath(); ctx.arc((q[1] + 0.5) / nav.bin * s, (q[0] + 0.5) / nav.bin * s, Math.max(4, 1.2 * s), 0, 2 * Math.PI); ctx.stroke();
    });
    patternOverlay.dataset.disks = String(found.length);
    var spots = templateSpots(p);
    if (el("ex-spots").checked && spots) {
      ctx.strokeStyle = "#00ff66"; ctx.lineWidth = 1.5;
      spots.forEach(function (pt) { ctx.beginPath(); ctx.arc((pt[1] + half) * s, (pt[0] + half) * s, Math.max(3, s), 0, 2 * Math.PI); ctx.stroke(); });
    }
  }
  function templateSpots(p) {
    var sp = D.spots || {}, i = p.y * SX + p.x;
    if (sp.regions && regionsMap) { var r = mapValues(regionsMap)[i]; if (r >= 0 && sp.regions[r]) { return sp.regions[r]; } }
    if (sp.components && labelsMap) { var c = mapValues(labelsMap)[i]; if (c >= 0 && sp.components[c]) { return sp.components[c]; } }
    return null;
  }
  function drawPatternKey() {
    var key = el("ex-pattern-key"); key.width = 330; key.height = 34;
    var ctx = key.getContext("2d"), lut = LUT[el("ex-pattern-cmap").value];
    for (var i = 0; i < 256; i++) { ctx.fillStyle = "rgb(" + lut[3 * i] + "," + lut[3 * i + 1] + "," + lut[3 * i + 2] + ")"; ctx.fillRect(10 + i, 2, 1, 14); }
    ctx.fillStyle = "#222"; ctx.font = "11px sans-serif";
    ctx.fillText(el("ex-stretch").checked ? "min" : "0", 10, 30); ctx.textAlign = "right";
    ctx.fillText((el("ex-stretch").checked ? "max" : fmt(nav.scale[1])) + " (" + el("ex-scale").value + ")", 266, 30);
  }

  // ---- weights and cluster -----------------------------------------------------------------------
  function weightsAt(i) {
    return components.map(function (m) { return m.min + mapValues(m)[i] / 255 * (m.max - m.min); });
  }
  function drawWeights(p) {
    var i = p.y * SX + p.x, w = weightsAt(i), canvas = el("ex-weights");
    canvas.width = 320; canvas.height = 150;
    var ctx = canvas.getContext("2d"), top = Math.max.apply(null, w.concat([1e-12])), k = w.length;
    var label = labelsMap ? mapValues(labelsMap)[i] : -1, bw = (canvas.width - 40) / Math.max(k, 1);
    ctx.font = "10px sans-serif"; ctx.fillStyle = "#222"; ctx.fillText(fmt(top), 2, 12); ctx.fillText("0", 2, 128);
    w.forEach(function (v, j) {
      var h = 110 * v / top;
      ctx.fillStyle = j === label ? "#d55e00" : "#0072b2"; ctx.fillRect(36 + j * bw, 124 - h, Math.max(1, bw - 2), h);
      if (k <= 24 || j % 5 === 0) { ctx.fillStyle = "#222"; ctx.fillText(String(j), 36 + j * bw, 140); }
    });
    ctx.fillText("component (orange: its cluster)", 120, 149);
    var list = el("ex-weights-list"); list.textContent = "";
    w.forEach(function (v, j) { var li = document.createElement("li"); li.textContent = v.toPrecision(4); li.dataset.value = String(v); list.appendChild(li); });
  }
  function drawCluster(p) {
    var i = p.y * SX + p.x, label = labelsMap ? mapValues(labelsMap)[i] : -1;
    el("ex-cluster-title").textContent = label >= 0 ? "Its cluster: " + label : "Its cluster: none (no significant component)";
    [["representative", "ex-cluster-rep"], ["mean", "ex-cluster-mean"]].forEach(function (pair) {
      var stack = clusters[pair[0]], canvas = el(pair[1]);
      if (!stack || label < 0 || label >= stack.shape[0]) { canvas.width = 1; canvas.height = 1; return; }
      if (!stack.codes) { stack.codes = bytes(stack.data); }
      var h = stack.shape[1], w = stack.shape[2];
      paint(canvas, displayCodes(stack.codes, label * h * w, h * w, stack.scales[label], stack.scales[label]), h, w,
        el("ex-pattern-cmap").value);
    });
  }

  // ---- selection ------------------------------------------------------------------------------
  function describe(p) {
    var i = p.y * SX + p.x, parts = ["y " + p.y + ", x " + p.x];
    var m = currentMap();
    if (m.kind === "continuous") { parts.push(m.name + " " + fmt(m.min + mapValues(m)[i] / 255 * (m.max - m.min))); }
    if (labelsMap) { parts.push("cluster " + mapValues(labelsMap)[i]); }
    if (regionsMap) { parts.push("region " + mapValues(regionsMap)[i]); }
    if (ratio) { parts.push("overlap ratio " + ratio[i].toFixed(3)); }
    return parts.join(" \u00b7 ");
  }
  function show(p) {
    state.shown = p;
    el("ex-position").textContent = describe(p);
    drawPattern(p); drawWeights(p); drawCluster(p); drawMapOverlay();
  }
  function select(y, x) {
    state.y = Math.max(0, Math.min(SY - 1, y)); state.x = Math.max(0, Math.min(SX - 1, x));
    var p = {y: state.y, x: state.x};
    if (regionsMap) {
      var r = mapValues(regionsMap)[p.y * SX + p.x];
      state.region = r >= 0 ? r : null;
      markRow(state.region, true);
    }
    show(p);
  }
  function positionOf(event) {
    var rect = mapOverlay.getBoundingClientRect();
    return {y: Math.floor((event.clientY - rect.top) / rect.height * SY), x: Math.floor((event.clientX - rect.left) / rect.width * SX)};
  }
  mapOverlay.addEventListener("click", function (e) { var p = positionOf(e); select(p.y, p.x); });
  mapOverlay.addEventListener("mousemove", function (e) {
    if (!el("ex-hover").checked) { return; }
    var p = positionOf(e);
    if (p.y >= 0 && p.y < SY && p.x >= 0 && p.x < SX && (!state.shown || p.y !== state.shown.y || p.x !== state.shown.x)) { show(p); }
  });
  mapOverlay.addEventListener("mouseleave", function () { show({y: state.y, x: state.x}); });
  mapOverlay.addEventListener("keydown", function (e) {
    var step = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}[e.key];
    if (step) { e.preventDefault(); select(state.y + step[0], state.x + step[1]); }
  });

  // ---- region table -----------------------------------------------------------------------------
  var table = D.regions;
  function rowsShown() {
    var rows = table.rows.slice(), f = state.filter.trim(), m = /^(\w+)\s*(<=|>=|!=|<|>|=)\s*(-?[\d.eE+-]+)$/.exec(f);
    if (m && table.columns.indexOf(m[1]) >= 0) {
      var c = table.columns.indexOf(m[1]), v = Number(m[3]);
      var test = {"<": function (a) { return a < v; }, ">": function (a) { return a > v; }, "<=": function (a) { return a <= v; },
        ">=": function (a) { return a >= v; }, "=": function (a) { return a === v; }, "!=": function (a) { return a !== v; }}[m[2]];
      rows = rows.filter(function (r) { return r[c] !== null && test(r[c]); });
    } else if (f) {
      rows = rows.filter(function (r) { return r.some(function (v) { return String(v).indexOf(f) >= 0; }); });
    }
    if (state.sort !== null) {
      var k = state.sort, sign = state.descending ? -1 : 1;
      rows.sort(function (a, b) {
        if (a[k] === b[k]) { return 0; } if (a[k] === null) { return 1; } if (b[k] === null) { return -1; }
        return (a[k] < b[k] ? -1 : 1) * sign;
      });
    }
    return rows;
  }
  function drawTable() {
    var head = el("ex-regions").tHead, body = el("ex-regions").tBodies[0];
    head.textContent = ""; body.textContent = "";
    var tr = document.createElement("tr");
    table.columns.forEach(function (name, k) {
      var th = document.createElement("th"); th.textContent = name; th.dataset.column = String(k); th.scope = "col";
      th.setAttribute("aria-sort", state.sort === k ? (state.descending ? "descending" : "ascending") : "none");
      th.addEventListener("click", function () {
        state.descending = state.sort === k ? !state.descending : false; state.sort = k; drawTable();
      });
      tr.appendChild(th);
    });
    head.appendChild(tr);
    var rid = table.columns.indexOf("region"), rows = rowsShown();
    rows.forEach(function (row) {
      var r = document.createElement("tr"); r.dataset.region = String(row[rid]);
      row.forEach(function (v) { var td = document.createElement("td"); td.textContent = typeof v === "number" ? fmt(v) : (v === null ? "" : v); r.appendChild(td); });
      r.addEventListener("click", function () { selectRegion(row[rid]); });
      body.appendChild(r);
    });
    el("ex-count").textContent = rows.length + " of " + table.rows.length + " regions";
    markRow(state.region, false);
  }
  function markRow(region, scroll) {
    if (!table) { return; }
    Array.prototype.forEach.call(el("ex-regions").tBodies[0].rows, function (r) {
      var on = region !== null && r.dataset.region === String(region);
      r.classList.toggle("selected", on);
      if (on && scroll) { reveal(r); }
    });
  }
  // scroll the table's own box (never the page: the map must stay where it was clicked) to show row r
  function reveal(r) {
    var wrap = r.closest(".ex-table-wrap"), box = wrap.getBoundingClientRect(), row = r.getBoundingClientRect();
    var head = el("ex-regions").tHead.getBoundingClientRect().height;
    if (row.top < box.top + head) { wrap.scrollTop += row.top - box.top - head; }
    else if (row.bottom > box.bottom) { wrap.scrollTop += row.bottom - box.bottom; }
  }
  function selectRegion(region) {
    state.region = region; markRow(region, false); drawMapOverlay();
  }
  function csv() {
    var quote = function (v) { v = v === null ? "" : String(v); return /[",\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; };
    return [table.columns.map(quote).join(",")].concat(rowsShown().map(function (r) { return r.map(quote).join(","); })).join("\n") + "\n";
  }

  // ---- controls -------------------------------------------------------------------------------------
  function fmt(v) { return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? Number(v).toExponential(2) : String(Number(Number(v).toPrecision(4))); }
  var select_ = el("ex-map");
  D.maps.forEach(function (m, i) { var o = document.createElement("option"); o.value = String(i); o.textContent = m.name; select_.appendChild(o); });
  ["ex-map-cmap", "ex-pattern-cmap"].forEach(function (id) {
    Object.keys(LUT).forEach(function (name) { var o = document.createElement("option"); o.value = name; o.textContent = name; el(id).appendChild(o); });
  });
  el("ex-pattern-cmap").value = "magma";
  select_.addEventListener("change", function () { state.map = Number(select_.value); drawMap(); el("ex-position").textContent = describe(state.shown || state); });
  el("ex-map-cmap").addEventListener("change", drawMap);
  function redrawPanels() { show(state.shown || {y: state.y, x: state.x}); }
  ["ex-scale", "ex-gamma", "ex-stretch", "ex-pattern-cmap", "ex-rings", "ex-spots", "ex-disks"].filter(el).forEach(function (id) {
    el(id).addEventListener(el(id).type === "range" ? "input" : "change", redrawPanels);
  });
  var overlapIndex = D.maps.map(function (m) { return m.kind; }).indexOf("overlap");
  el("ex-threshold").addEventListener("input", function () {
    var v = Number(el("ex-threshold").value);
    state.threshold = Math.fround(v / 100); el("ex-threshold-value").textContent = v + " %";
    if (overlapIndex >= 0) { state.map = overlapIndex; select_.value = String(overlapIndex); drawMap(); }
  });
  if (overlapIndex < 0) { el("ex-overlap-control").style.display = "none"; }
  if (!table) { el("ex-regions-block").style.display = "none"; }
  else {
    el("ex-filter").addEventListener("input", function () { state.filter = el("ex-filter").value; drawTable(); });
    el("ex-csv").addEventListener("click", function () {
      var a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([csv()], {type: "text/csv"})); a.download = "regions.csv";
      document.body.appendChild(a); a.click(); a.remove();
    });
    drawTable();
  }
  var first = D.maps.map(function (m) { return m.name; }).indexOf("clusters (argmax component)");
  state.map = first >= 0 ? first : 0; select_.value = String(state.map);
  drawMap(); select(state.y, state.x);
  window.stemnmfExplorer = {state: state, select: select, selectRegion: selectRegion, csv: csv, weightsAt: weightsAt};
  document.body.dataset.explorer = "ready";
  if (window.performance && performance.mark) { performance.mark("stemnmf-explorer-ready"); }
}());
