// The live page: polls the JSON views of blockemu/control/live.py and draws them with uPlot.
// Read-only: only GET requests, so it works without the API token.  Everything it knows
// is exposed on window.blockemuLive for the browser test (tests/integration/test_live_page_browser.py).
"use strict";

const KEEP = 300;  // points kept per timeline (five minutes at one sample a second)
const OPS = ["read", "write", "flush", "trim", "zero"];
const ZONE_COLOURS = {
  empty: "#e8e8e8", implicitly_open: "#7fc97f", explicitly_open: "#2ca02c", closed: "#fdc086",
  full: "#386cb0", read_only: "#bf5b17", offline: "#555555", not_write_pointer: "#bbbbff",
};

const live = { info: null, samples: 0, charts: {}, zoneCells: {}, errors: 0, mapUpdates: 0, zoneUpdates: 0 };
window.blockemuLive = live;

function $(id) { return document.getElementById(id); }

async function getJson(path) {
  const answer = await fetch(path, { cache: "no-store" });
  if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status}`);
  return answer.json();
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// ---------------------------------------------------------------- timelines
// A timeline: one uPlot chart with a wall-clock x axis and named series, data kept as arrays.
function timeline(id, title, names, unit, opts = {}) {
  const el = $(id);
  const colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
  // A series named "... %" goes on its own scale, with an axis on the right.
  const percent = names.some(name => name.endsWith("%"));
  const series = [{}].concat(names.map((name, i) => ({
    label: name, stroke: colours[i % colours.length], width: 1.5, spanGaps: true,
    scale: name.endsWith("%") ? "%" : "y",
    paths: opts.step ? uPlot.paths.stepped({ align: 1 }) : undefined,
  })));
  const data = [[]].concat(names.map(() => []));
  const axes = [{}, { label: unit, size: 70, scale: "y" }];
  if (percent) axes.push({ label: "%", scale: "%", side: 1, grid: { show: false } });
  const scales = { x: { time: opts.time !== false } };
  if (percent) scales["%"] = { range: [0, 100] };
  const chart = new uPlot({ title, width: opts.width || 460, height: 200, series, scales, axes }, data, el);
  live.charts[id.replace("chart-", "")] = chart;
  return chart;
}

function push(chart, x, values) {
  const data = chart.data.map(a => a.slice());
  data[0].push(x);
  values.forEach((v, i) => data[i + 1].push(v));
  if (data[0].length > KEEP) data.forEach(a => a.shift());
  chart.setData(data);
}

// Latency percentile from the difference of two cumulative histograms (bucket upper bounds in
// seconds, +Inf last), interpolated linearly inside the bucket it falls in.
function percentile(bounds, counts, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (!total) return null;
  const target = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    if (seen + counts[i] >= target && counts[i] > 0) {
      const lower = i === 0 ? 0 : bounds[i - 1];
      const upper = i < bounds.length ? bounds[i] : bounds[bounds.length - 1];
      return lower + (upper - lower) * (target - seen) / counts[i];
    }
    seen += counts[i];
  }
  return bounds[bounds.length - 1];
}

// ---------------------------------------------------------------- per sample
let previous = null;

function onSample(s) {
  live.samples++;
  live.last = s;
  const t = s.wall_s;
  if (previous) {
    const dt = Math.max(t - previous.wall_s, 1e-3);
    const rate = (op, key) => (s.ops[op][key] - previous.ops[op][key]) / dt;
    push(live.charts.iops, t, [rate("read", "requests"), rate("write", "requests")]);
    push(live.charts.throughput, t, [rate("read", "bytes") / 1e6, rate("write", "bytes") / 1e6]);
    const bounds = live.info.latency_buckets_s;
    const delta = s.ops.read.latency_counts.map((_, i) =>
      OPS.reduce((sum, op) => sum + s.ops[op].latency_counts[i] - previous.ops[op].latency_counts[i], 0));
    const us = q => { const p = percentile(bounds, delta, q); return p === null ? null : p * 1e6; };
    push(live.charts.latency, t, [us(0.5), us(0.99), us(0.999)]);
  }
  push(live.charts.qd, t, [s.queue_depth, s.queue_depth_peak]);
  if (s.ufs) onUfs(t, s.ufs);
  if (s.zns) onZns(t, s);
  if (s.zram) onZram(t, s.zram);
  if (s.power) onPower(s);
  previous = s;
}

function onUfs(t, ufs) {
  const hid = ufs.hid;
  $("hid-state").textContent = hid.state;
  $("hid-state").dataset.state = hid.state;
  $("hid-progress").value = hid.progress_ratio;
  $("hid-progress").dataset.progress = hid.progress_ratio;
  $("hid-progress-text").textContent = hid.progress_ratio;
  $("hid-fragmented-size").textContent = bytes(hid.fragmented_size);
  const f = ufs.fragmentation;
  $("frag-bytes").textContent = `${bytes(f.fragmented_bytes)} of ${bytes(f.mapped_bytes)} mapped (${f.fragmented_percent}%)`;
  $("ufs-waf").textContent = ufs.write_amplification;
  push(live.charts.frag, t, [f.fragmented_bytes / 1048576, hid.fragmented_size / 1048576, hid.progress_ratio]);
  onL2p(t, ufs.l2p);
  onWriteBooster(t, ufs.writebooster);
}

// Per-interval rate of a cumulative counter of the UFS sample (null on the first sample).
function ufsRate(t, path, value) {
  const before = previous && previous.ufs ? path(previous.ufs) : undefined;
  if (before === undefined || value === undefined) return null;
  return (value - before) / Math.max(t - previous.wall_s, 1e-3);
}

function onL2p(t, l2p) {
  $("l2p-mode").textContent = l2p.mode === "unlimited" ? "unlimited (whole map in SRAM)" :
    `${l2p.mode}, ${bytes(l2p.capacity_bytes)} of SRAM for a ${bytes(l2p.map_bytes)} map`;
  $("l2p-mode").dataset.mode = l2p.mode;
  if (l2p.mode === "unlimited") {
    for (const id of ["l2p-cached", "l2p-counts", "l2p-io"]) $(id).textContent = "–";
    return;
  }
  $("l2p-cached").textContent = `${l2p.cached_units} map units, ${bytes(l2p.cached_bytes)} (${l2p.dirty_units} dirty)`;
  $("l2p-counts").textContent = `${l2p.hits} / ${l2p.misses} (miss ratio ${(100 * l2p.miss_ratio).toFixed(2)}%)`;
  $("l2p-counts").dataset.misses = l2p.misses;
  $("l2p-io").textContent = `${l2p.map_reads} / ${l2p.map_writes}`;
  const hits = ufsRate(t, u => u.l2p.hits, l2p.hits), misses = ufsRate(t, u => u.l2p.misses, l2p.misses);
  const ratio = hits === null || hits + misses <= 0 ? null : 100 * misses / (hits + misses);
  push(live.charts.l2p, t, [misses, ufsRate(t, u => u.l2p.map_writes, l2p.map_writes), ratio]);
}

function onWriteBooster(t, wb) {
  if (wb.present === false) {
    $("wb-on").textContent = "not present";
    for (const id of ["wb-avail", "wb-bytes", "wb-life"]) $(id).textContent = "–";
    return;
  }
  $("wb-on").textContent = `${wb.wb_on} / ${wb.enable_wb_buf_flush} (flush status ${wb.wb_flush_status})`;
  $("wb-on").dataset.wbOn = wb.wb_on;
  $("wb-avail").textContent = `${wb.wb_avail_buf * 10}% free of ${bytes(wb.wb_cur_buf)}`;
  $("wb-bytes").textContent = `${bytes(wb.slc_written_bytes)} / ${bytes(wb.tlc_direct_bytes)} / ${bytes(wb.folded_bytes)}`;
  $("wb-bytes").dataset.slc = wb.slc_written_bytes;
  $("wb-life").textContent = wb.wb_life_time_est;
  const mbps = (path, value) => { const r = ufsRate(t, path, value); return r === null ? null : r / 1e6; };
  push(live.charts.wb, t, [wb.buffer_used_bytes / 1048576, mbps(u => u.writebooster.slc_written_bytes,
    wb.slc_written_bytes), mbps(u => u.writebooster.tlc_direct_bytes, wb.tlc_direct_bytes),
  mbps(u => u.writebooster.folded_bytes, wb.folded_bytes)]);
}

function onZns(t, s) {
  const z = s.zns;
  $("zns-open").textContent = `${z.open_zones} / ${z.active_zones}`;
  $("zns-resets").textContent = `${z.zone_resets} / ${z.zone_finishes}`;
  $("zns-copy").textContent = `${z.copy_commands} commands, ${bytes(z.copied_bytes)}`;
  const c = z.conditions;
  push(live.charts.zones, t, [c.empty, (c.implicitly_open || 0) + (c.explicitly_open || 0), c.closed, c.full]);
  if (s.gc) push(live.charts.gc, t, [s.gc.gc_bytes_relocated / 1048576, z.copied_bytes / 1048576, s.gc.free_zones]);
  else push(live.charts.gc, t, [null, z.copied_bytes / 1048576, null]);
}

function onZram(t, z) {
  const m = z.mm_stat;
  push(live.charts.mmstat, t, [m.orig_data_size / 1048576, m.compr_data_size / 1048576, m.mem_used_total / 1048576]);
  push(live.charts["zram-pages"], t, [m.same_pages, m.huge_pages, z.staged_pages]);
  $("zram-staged").textContent = z.staged_pages;
}

// Frequency and queue depth against modeled time, with the governor's decisions as steps.
const power = { t: [], freq: [], qd: [] };

function onPower(s) {
  const p = s.power;
  $("power-governor").textContent = p.governor;
  $("power-freq").textContent = `${(p.cur_freq / 1e6).toFixed(0)} MHz (target ${(p.target_freq / 1e6).toFixed(0)} MHz)`;
  $("power-energy").textContent = `${p.energy_joules.toFixed(4)} J`;
  $("power-trans").textContent = p.total_trans;
  const points = new Map();
  power.t.forEach((t, i) => points.set(t, [power.freq[i], power.qd[i]]));
  for (const [t, f] of p.decisions) points.set(t, [f / 1e6, (points.get(t) || [null, null])[1]]);
  points.set(s.modeled_s, [p.cur_freq / 1e6, p.queue_depth]);
  const ts = [...points.keys()].sort((a, b) => a - b).slice(-KEEP);
  power.t = ts;
  power.freq = ts.map(t => points.get(t)[0]);
  power.qd = ts.map(t => points.get(t)[1]);
  live.charts.power.setData([power.t, power.freq, power.qd]);
}

// ---------------------------------------------------------------- maps
function runColour(run, window) {
  if (!run) return "#222";
  // Hue from red (1 sector) to green (a whole HID window or longer), on a log scale.
  const x = Math.min(1, Math.log2(run) / Math.log2(Math.max(window, 2)));
  return `hsl(${Math.round(120 * x)}, 75%, ${45 + 5 * x}%)`;
}

function drawFragmentationMap(map) {
  live.mapUpdates++;
  live.fragmentationMap = map;
  const grid = $("frag-grid").getContext("2d");
  const cols = 128, rows = Math.ceil(map.run.length / cols);
  const cw = grid.canvas.width / cols, ch = grid.canvas.height / rows;
  grid.fillStyle = "#222";
  grid.fillRect(0, 0, grid.canvas.width, grid.canvas.height);
  map.run.forEach((run, i) => {
    grid.fillStyle = runColour(run, map.window_sectors);
    grid.fillRect((i % cols) * cw, Math.floor(i / cols) * ch, Math.ceil(cw), Math.ceil(ch));
  });
  const scatter = $("frag-scatter").getContext("2d");
  const w = scatter.canvas.width, h = scatter.canvas.height;
  scatter.fillStyle = "#222";
  scatter.fillRect(0, 0, w, h);
  const used = map.ppn.filter(p => p >= 0);
  const low = used.length ? Math.min(...used) : 0, high = used.length ? Math.max(...used) + 1 : 1;
  map.ppn.forEach((p, i) => {
    if (p < 0) return;
    scatter.fillStyle = runColour(map.run[i], map.window_sectors);
    scatter.fillRect(i / map.ppn.length * w, h - 1 - (p - low) / (high - low) * (h - 1), 2, 2);
  });
  const first = map.first_sector * map.sector_bytes;
  $("frag-map-range").textContent =
    `logical ${bytes(first)} … ${bytes(first + map.ppn.length * map.sector_bytes)}, physical pages ${low} … ${high - 1}`;
}

function drawZones(zones) {
  live.zoneUpdates++;
  const map = $("zone-map");
  for (const z of zones) {
    let cell = live.zoneCells[z.index];
    if (!cell) {
      cell = document.createElement("div");
      cell.className = "zone";
      cell.id = `zone-${z.index}`;
      cell.appendChild(document.createElement("div")).className = "wp";
      map.appendChild(cell);
      live.zoneCells[z.index] = cell;
    }
    const filled = z.wp === null ? 0 : Math.min(1, (z.wp - z.start) / z.capacity);
    cell.dataset.condition = z.condition;
    cell.dataset.wp = z.wp === null ? "" : z.wp;
    cell.style.background = ZONE_COLOURS[z.condition] || "#f0f";
    cell.firstChild.style.height = `${(100 * filled).toFixed(1)}%`;
    cell.title = `zone ${z.index}: ${z.condition}` + (z.wp === null ? "" :
      `, write pointer ${bytes(z.wp - z.start)} of ${bytes(z.capacity)}`);
  }
}

function drawZramCensus(c) {
  live.census = c;
  const body = $("zram-table").tBodies[0];
  body.replaceChildren(...Object.keys(c.pages).sort().map(key => {
    const row = document.createElement("tr");
    const priority = key in c.priorities ? String(c.priorities[key]) : "–";
    for (const text of [key, priority, String(c.pages[key]), bytes(c.bytes[key])]) {
      row.appendChild(document.createElement("td")).textContent = text;
    }
    return row;
  }));
  $("zram-same").textContent = c.same_pages;
  $("zram-huge").textContent = c.huge_pages;
  $("zram-idle").textContent = c.idle_pages;
}

// ---------------------------------------------------------------- set-up and polling
function setUp(info) {
  live.info = info;
  $("device-name").textContent = info.name;
  $("device-kind").textContent = `${info.kind}, ${bytes(info.size_bytes)}`;
  document.title = `blockemu ${info.name}`;
  timeline("chart-iops", "IOPS", ["read", "write"], "requests/s");
  timeline("chart-throughput", "Throughput", ["read", "write"], "MB/s");
  timeline("chart-latency", "Modeled latency (per interval)", ["p50", "p99", "p99.9"], "µs");
  timeline("chart-qd", "Queue depth", ["now", "peak"], "requests");
  for (const view of info.views) {
    const panel = $(view === "gc" ? "zones" : view);
    if (panel) panel.hidden = false;
  }
  if (info.views.includes("ufs")) {
    timeline("chart-frag", "Fragmentation and HID", ["fragmented", "HID fragmented_size", "progress %"], "MiB");
    timeline("chart-l2p", "L2P mapping cache", ["misses/s", "write-backs/s", "miss ratio %"], "per second");
    timeline("chart-wb", "WriteBooster", ["buffer used MiB", "SLC MB/s", "TLC direct MB/s", "folded MB/s"], "");
  }
  if (info.views.includes("zones")) {
    $("zone-legend").replaceChildren(...Object.entries(ZONE_COLOURS).map(([name, colour]) => {
      const span = document.createElement("span");
      span.appendChild(document.createElement("i")).style.background = colour;
      span.appendChild(document.createTextNode(name));
      return span;
    }));
    timeline("chart-zones", "Zones by condition", ["empty", "open", "closed", "full"], "zones");
    timeline("chart-gc", "GC and copy", ["GC relocated MiB", "copied MiB", "free zones"], "");
  }
  if (info.views.includes("zram")) {
    timeline("chart-mmstat", "mm_stat", ["orig_data_size", "compr_data_size", "mem_used_total"], "MiB");
    timeline("chart-zram-pages", "Pages", ["same", "huge", "staged (async backlog)"], "pages");
  }
  if (info.views.includes("power")) {
    timeline("chart-power", "Frequency (governor decisions) and queue depth, modeled time",
      ["frequency MHz", "queue depth"], "", { time: false, step: true, width: 940 });
  }
}

function repeat(ms, task) {
  let busy = false;
  const run = async () => {
    if (busy) return;  // never more than one request of a kind in flight
    busy = true;
    try {
      await task();
      $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
      $("status").classList.remove("error");
    } catch (err) {
      live.errors++;
      $("status").textContent = `cannot reach the device: ${err.message}`;
      $("status").classList.add("error");
    } finally {
      busy = false;
    }
  };
  run();
  setInterval(run, ms);
}

async function main() {
  let info;
  for (;;) {
    try { info = await getJson("/api/v1/live"); break; } catch (err) {
      $("status").textContent = `cannot reach the device: ${err.message}`;
      await new Promise(resolve => setTimeout(resolve, 2000));
    }
  }
  setUp(info);
  repeat(info.poll_ms, async () => onSample(await getJson("/api/v1/live/sample")));
  if (info.views.includes("ufs")) {
    // The map is fetched again only once the mapping has changed (a read-only workload leaves it alone).
    repeat(info.map_poll_ms, async () => {
      const wanted = live.last && live.last.ufs ? live.last.ufs.layout_generation : null;
      if (live.fragmentationMap && live.fragmentationMap.layout_generation === wanted) return;
      drawFragmentationMap(await getJson("/api/v1/live/fragmentation-map"));
    });
  }
  if (info.views.includes("zones")) repeat(info.poll_ms, async () => drawZones(await getJson("/api/v1/zones")));
  if (info.views.includes("zram")) {
    repeat(info.map_poll_ms, async () => drawZramCensus(await getJson("/api/v1/live/zram")));
  }
}

main();
