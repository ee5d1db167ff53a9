/* Wall display client: one websocket, protocol in docs/ws-protocol.md. No framework. */
"use strict";
(function () {
  const I18N = {
    vi: {
      title: "Trung tâm điều hành thông minh", map: "Bản đồ trạng thái các huyện, thị xã, thành phố",
      charts: "Diễn biến 3 giờ gần nhất (toàn tỉnh)", alerts: "Cảnh báo", no_alerts: "Không có cảnh báo",
      connecting: "Đang kết nối…", open: "Đã kết nối", closed: "Mất kết nối — đang thử lại",
      updated: "cập nhật {t} trước", never: "chưa có dữ liệu", sec: "{n} giây", min: "{n} phút",
      hour: "{n} giờ", ack: "Xác nhận", acking: "Đang gửi…", acked_by: "Đã xác nhận: {u}", omitted: "Còn {n} cảnh báo ít nghiêm trọng hơn chưa hiển thị",
      assignee: "Phụ trách: {u}", operator: "Điều hành viên", viewer: "Chỉ xem",
      ok: "Bình thường", watch: "Theo dõi", warn: "Cảnh báo", crit: "Nguy hiểm", nodata: "Chưa có số liệu",
      air: "Không khí", traffic: "Giao thông", water: "Thủy văn", energy: "Năng lượng",
      parking: "Bãi đỗ xe", services: "Dịch vụ công", feedback: "Phản ánh", emergency: "Khẩn cấp",
      security: "An ninh", congestion: "Chiếm dụng làn", vehicles: "Lưu lượng", online: "Trực tuyến",
      dispatch: "Điều phối P90", alarm: "Báo động", no_alarm: "Dưới BĐ I", station: "Trạm",
      threshold: "ngưỡng", critical: "Khẩn cấp", warning: "Cảnh báo", info: "Thông tin",
      raised: "Mới", escalated: "Nâng cấp", acknowledged: "Đã xác nhận", cleared: "Đã hết",
      pm25: "PM2.5", per_min: "/phút", load: "Phụ tải",
      live_window: "Tạm tính", live_window_hint: "Báo theo giá trị tạm tính của một cửa sổ chưa chốt",
      broker_restart: "Máy chủ sự kiện (broker) khởi động lại lúc {t} để giải phóng bộ nhớ; dữ liệu đang truyền có thể mất",
      map_note: "Ranh giới gần đúng: vùng gần trụ sở mỗi huyện nhất (Voronoi), không phải địa giới đo đạc",
      filtered: "Lọc: {d} ✕", filter_hint: "Bấm để hiện tất cả cảnh báo", water_level: "Mực nước",
    },
    en: {
      title: "Intelligent Operations Center", map: "District status map",
      charts: "Last 3 hours (province)", alerts: "Alerts", no_alerts: "No active alerts",
      connecting: "Connecting…", open: "Connected", closed: "Disconnected — retrying",
      updated: "last update {t} ago", never: "no data yet", sec: "{n} s", min: "{n} min",
      hour: "{n} h", ack: "Acknowledge", acking: "Sending…", acked_by: "Acknowledged by {u}", omitted: "{n} less severe alerts not shown",
      assignee: "Assigned to {u}", operator: "Operator", viewer: "View only",
      ok: "Normal", watch: "Watch", warn: "Warning", crit: "Critical", nodata: "No data",
      air: "Air", traffic: "Traffic", water: "Water", energy: "Energy", parking: "Parking",
      services: "Public services", feedback: "Citizen reports", emergency: "Emergency",
      security: "Security", congestion: "Lane occupancy", vehicles: "Vehicles", online: "Online",
      dispatch: "Dispatch P90", alarm: "Alarm", no_alarm: "Below level I", station: "Station",
      threshold: "threshold", critical: "Critical", warning: "Warning", info: "Info",
      raised: "New", escalated: "Escalated", acknowledged: "Acknowledged", cleared: "Cleared",
      pm25: "PM2.5", per_min: "/min", load: "Load",
      live_window: "Live value", live_window_hint: "Raised on a live (not yet final) window",
      broker_restart: "The event broker restarted at {t} to free memory; data in transit may have been lost",
      map_note: "Approximate boundaries: the area closest to each district seat (Voronoi), not surveyed borders",
      filtered: "Filter: {d} ✕", filter_hint: "Click to show every alert", water_level: "Water level",
    },
  };
  const ALARM_VI = ["", "BĐ I", "BĐ II", "BĐ III"];
  const ALARM_EN = ["", "Level I", "Level II", "Level III"];
  const STATUS_COLOURS = ["#22c55e", "#eab308", "#f97316", "#ef4444"];
  // Tiles: [domain, main kpi, optional secondary kpi + label key].
  const TILES = [
    { id: "aqi", domain: "air", kpi: "air.aqi.vn", sub: "air.pm25.avg", subLabel: "pm25" },
    { id: "speed", domain: "traffic", kpi: "traffic.speed.avg", sub: "traffic.occupancy.avg", subLabel: "congestion" },
    { id: "vehicles", domain: "traffic", kpi: "traffic.vehicles.sum", sub: "traffic.incidents.count" },
    { id: "water", domain: "water", kpi: "water.level.max" },
    { id: "energy", domain: "energy", kpi: "energy.consumption.sum", sub: "energy.load.avg", subLabel: "load" },
    { id: "parking", domain: "parking", kpi: "parking.occupancy.rate" },
    { id: "ontime", domain: "services", kpi: "services.ontime.rate", sub: "services.online.rate", subLabel: "online" },
    { id: "reports", domain: "feedback", kpi: "feedback.open.count", sub: "feedback.closed.count" },
    { id: "calls", domain: "emergency", kpi: "emergency.calls.count", sub: "emergency.dispatch.p90", subLabel: "dispatch" },
    { id: "security", domain: "security", kpi: "security.incidents.count", sub: "security.cyber.count" },
    { id: "payfail", domain: "services", kpi: "payments.failure.rate", sub: "payments.transactions.count" },
    { id: "late", domain: "services", kpi: "services.portal.latency.max", sub: "services.portal.errors.ratio" },
  ];
  const CHARTS = ["air.aqi.vn", "traffic.speed.avg", "water.level.max", "emergency.calls.count"];
  const MAP_KPIS = ["air.aqi.vn", "water.level.max", "traffic.occupancy.avg"];
  const SEVERITY_RANK = { critical: 3, warning: 2, info: 1 };

  const params = new URLSearchParams(location.search);
  let lang = params.get("lang") || localStorage.getItem("ioc-wall-lang") || "vi";
  let config = null;
  let ws = null;
  let role = null;
  let epoch = null;
  const lastSeq = { kpi: 0, alerts: 0 };
  const firstAnswer = { kpi: true, alerts: true };
  const kpis = new Map(); // "kpi|scope|len" -> record
  const series = new Map(); // "kpi|scope" -> Map(ts -> value)
  const alerts = new Map(); // alert_id -> record
  const pendingAcks = new Set();
  let lastUpdate = null; // Date.now() of the last data frame
  let backoff = 1000;
  let resumes = 0;
  // Open alerts the server left out of a size-bounded snapshot (they arrive if they change).
  let omittedAlerts = 0;
  const MAX_ALERT_ITEMS = 100;
  let requestId = 0;
  // The server's operational notice (a broker restart), shown until its "until".
  let notice = null;
  const plots = new Map();
  // The map (wallmap.js) and the district whose alerts the list shows (null: all).
  let mapView = null;
  let selectedDistrict = null;
  const stationDistrict = new Map(); // station id -> district code
  const stationName = new Map(); // station id -> name

  const $ = (id) => document.getElementById(id);
  const t = (key, vars) => {
    let s = (I18N[lang] && I18N[lang][key]) || I18N.vi[key] || key;
    for (const k in vars || {}) s = s.replace("{" + k + "}", vars[k]);
    return s;
  };
  const kpiTitle = (id) => {
    const spec = config && config.kpis[id];
    return spec ? (lang === "en" ? spec.title_en : spec.title_vi) : id;
  };
  // Catalogue units are English words where they are counts; the wall speaks Vietnamese.
  const UNIT_VI = {
    vehicles: "xe", incidents: "vụ", outages: "sự cố", dossiers: "hồ sơ", requests: "lượt",
    reports: "phản ánh", stars: "sao", calls: "cuộc gọi", attacks: "vụ", payments: "giao dịch",
    events: "sự kiện", s: "giây",
  };
  const kpiUnit = (id) => {
    const unit = config && config.kpis[id] ? config.kpis[id].unit : "";
    return lang === "vi" && UNIT_VI[unit] ? UNIT_VI[unit] : unit;
  };
  const districtName = (code) => {
    const d = config && config.districts.find((x) => x.code === code);
    return d ? (lang === "en" ? d.name_en : d.name_vi) : code;
  };
  const fmt = (v, unit) => {
    if (v === null || v === undefined || Number.isNaN(v)) return "—";
    const abs = Math.abs(v);
    const digits = unit === "m" ? 2 : abs >= 100 || Number.isInteger(v) ? 0 : 1;
    return v.toLocaleString(lang === "en" ? "en-GB" : "vi-VN", { maximumFractionDigits: digits, minimumFractionDigits: unit === "m" ? 2 : 0 });
  };
  const winLen = (r) => (Date.parse(r.window_end) - Date.parse(r.window_start)) / 1000;
  const latest = (kpi, scope) => kpis.get(kpi + "|" + scope + "|60");

  function aqiBand(v) {
    const bands = (config && config.aqi_bands) || [];
    for (const b of bands) if (v >= b.lo && v <= b.hi) return b;
    return bands.length && v > bands[bands.length - 1].hi ? bands[bands.length - 1] : null;
  }
  function aqiStatus(v) { return v == null ? null : v <= 100 ? 0 : v <= 150 ? 1 : v <= 200 ? 2 : 3; }
  function alarmLevel(stationId, level) {
    const st = config && config.water_stations.find((s) => s.station_id === stationId);
    if (!st || level == null) return 0;
    let n = 0;
    st.alarm_levels.forEach((th, i) => { if (level >= th) n = i + 1; });
    return n;
  }

  // --- rendering -----------------------------------------------------------------
  function buildTiles() {
    const box = $("tiles");
    box.innerHTML = "";
    for (const tile of TILES) {
      const el = document.createElement("div");
      el.className = "tile";
      el.dataset.tile = tile.id;
      el.dataset.kpi = tile.kpi;
      el.innerHTML = '<div class="domain"></div><div class="label"></div>' +
        '<div><span class="value">—</span><span class="unit"></span></div><div class="sub"></div>';
      box.appendChild(el);
    }
  }

  function renderTiles() {
    const now = Date.now();
    for (const tile of TILES) {
      const el = document.querySelector('[data-tile="' + tile.id + '"]');
      const rec = latest(tile.kpi, "city");
      el.querySelector(".domain").textContent = t(tile.domain);
      el.querySelector(".label").textContent = kpiTitle(tile.kpi);
      el.querySelector(".unit").textContent = kpiUnit(tile.kpi);
      el.querySelector(".value").textContent = rec ? fmt(rec.value, kpiUnit(tile.kpi)) : "—";
      el.classList.toggle("stale", !!rec && now - Date.parse(rec.computed_at) > 180000);
      let sub = "";
      let status = null;
      if (tile.sub) {
        const s = latest(tile.sub, "city");
        const label = tile.subLabel ? t(tile.subLabel) : kpiTitle(tile.sub);
        sub = label + ": <b>" + (s ? fmt(s.value, kpiUnit(tile.sub)) : "—") + "</b> " + kpiUnit(tile.sub);
      }
      if (tile.id === "aqi" && rec) {
        const band = aqiBand(rec.value);
        status = aqiStatus(rec.value);
        if (band) {
          sub = '<span class="badge" style="background:' + (band.rgb || band.colour) + '">' +
            (lang === "en" ? band.name_en : band.name_vi) + "</span> " + sub;
          el.style.borderLeftColor = band.rgb || band.colour;
        }
      }
      if (tile.id === "water") {
        const worst = worstStation();
        if (worst) {
          status = worst.alarm;
          const names = lang === "en" ? ALARM_EN : ALARM_VI;
          const st = config.water_stations.find((x) => x.station_id === worst.id);
          // The station's BĐ I/II/III levels, for comparison with the value above.
          const levels = st ? " (" + st.alarm_levels.map((v) => fmt(v)).join(" / ") + " m)" : "";
          sub = t("station") + " " + worst.name + ": <b>" + (worst.alarm ? names[worst.alarm] : t("no_alarm")) + "</b>" + levels;
          el.querySelector(".value").textContent = fmt(worst.level, "m");
        }
      }
      if (status === null && rec) status = 0;
      if (status !== null) el.dataset.status = String(status); else delete el.dataset.status;
      if (tile.id !== "aqi") el.style.borderLeftColor = "";
      el.querySelector(".sub").innerHTML = sub;
    }
  }

  function worstStation() {
    let worst = null;
    for (const [key, rec] of kpis) {
      if (!key.startsWith("water.level.max|station:") || !key.endsWith("|60")) continue;
      const id = rec.scope.slice(8);
      const st = config.water_stations.find((s) => s.station_id === id);
      const alarm = alarmLevel(id, rec.value);
      const cand = { id, name: st ? st.name : id, level: rec.value, alarm, district: st && st.district };
      if (!worst || alarm > worst.alarm || (alarm === worst.alarm && rec.value > worst.level)) worst = cand;
    }
    return worst;
  }

  // The district an alert is about: its subject's, or its station's (null for the province).
  function alertDistrict(a) {
    if (a.subject.startsWith("district:")) return a.subject.slice(9);
    if (a.subject.startsWith("station:")) return stationDistrict.get(a.subject.slice(8)) || null;
    return null;
  }

  // Worst of: AQI, lane occupancy, its water stations' alarm levels, its open alerts.
  function districtStatus(code) {
    let status = null;
    const bump = (s) => { if (s !== null && s !== undefined) status = Math.max(status === null ? 0 : status, s); };
    const aqi = latest("air.aqi.vn", "district:" + code);
    if (aqi) bump(aqiStatus(aqi.value));
    const occ = latest("traffic.occupancy.avg", "district:" + code);
    if (occ) bump(occ.value >= 85 ? 2 : occ.value >= 70 ? 1 : 0);
    for (const st of config.water_stations) {
      if (st.district !== code) continue;
      const rec = latest("water.level.max", "station:" + st.station_id);
      if (rec) bump(alarmLevel(st.station_id, rec.value));
    }
    for (const a of alerts.values()) {
      if (a.state === "cleared") continue;
      if (alertDistrict(a) === code) bump(a.severity === "critical" ? 3 : a.severity === "warning" ? 2 : 1);
    }
    return { status, aqi };
  }

  function stationView(id, m) {
    if (m.kind === "water") {
      const rec = latest("water.level.max", "station:" + id);
      const alarm = rec ? alarmLevel(id, rec.value) : null;
      const names = lang === "en" ? ALARM_EN : ALARM_VI;
      return { status: alarm, text: rec ? fmt(rec.value, "m") + " m" + (alarm ? " " + names[alarm] : "") : "",
        title: t("water_level") + " · " + m.name };
    }
    const rec = latest("air.aqi.vn", "station:" + id);
    return { status: rec ? aqiStatus(rec.value) : null, text: rec ? fmt(rec.value, "AQI") : "", title: "VN_AQI · " + m.name };
  }

  function renderMap() {
    if (mapView) {
      mapView.render({
        selected: selectedDistrict,
        district: (code) => {
          const { status, aqi } = districtStatus(code);
          const name = districtName(code).replace(/^(Thành phố|Thị xã|Huyện) /, "").replace(/ (City|Town|District)$/, "");
          return { status, name, text: aqi ? "AQI " + Math.round(aqi.value) : "" };
        },
        station: stationView,
      });
    }
    $("legend").innerHTML = ["ok", "watch", "warn", "crit"].map((k, i) =>
      '<span><i style="background:' + STATUS_COLOURS[i] + '"></i>' + t(k) + "</span>").join("") +
      '<span><i style="background:#334155"></i>' + t("nodata") + "</span>";
  }

  function selectDistrict(code) {
    selectedDistrict = selectedDistrict === code ? null : code;
    renderMap();
    renderAlerts();
  }

  function buildCharts() {
    const box = $("charts");
    box.innerHTML = "";
    plots.clear();
    for (const kpi of CHARTS) {
      const el = document.createElement("div");
      el.className = "chart";
      el.dataset.chart = kpi;
      el.innerHTML = '<div class="title"><b></b><span></span></div><div class="plot"></div>';
      box.appendChild(el);
    }
    requestAnimationFrame(() => {
      for (const kpi of CHARTS) {
        const el = document.querySelector('[data-chart="' + kpi + '"] .plot');
        const rect = el.getBoundingClientRect();
        const opts = {
          width: Math.max(200, rect.width), height: Math.max(80, rect.height - 4),
          legend: { show: false }, cursor: { show: false },
          scales: { x: { time: true } },
          axes: [
            {
              stroke: "#8ea0bf", grid: { stroke: "#22314f" }, ticks: { stroke: "#22314f" },
              // 24-hour local times, no US date line
              values: (u, splits) => splits.map((v) => new Date(v * 1000).toLocaleTimeString(
                lang === "en" ? "en-GB" : "vi-VN", { hour: "2-digit", minute: "2-digit", hour12: false })),
            },
            { stroke: "#8ea0bf", grid: { stroke: "#22314f" }, ticks: { stroke: "#22314f" }, size: 50 },
          ],
          series: [{}, { stroke: "#38bdf8", width: 2, fill: "rgba(56,189,248,0.12)", spanGaps: false }],
        };
        if (window.uPlot) plots.set(kpi, new window.uPlot(opts, [[], []], el));
      }
      renderCharts();
    });
  }

  function renderCharts() {
    for (const kpi of CHARTS) {
      const box = document.querySelector('[data-chart="' + kpi + '"]');
      if (!box) continue;
      box.querySelector(".title b").textContent = kpiTitle(kpi);
      const s = series.get(kpi + "|city");
      const last = latest(kpi, "city");
      box.querySelector(".title span").textContent = last ? fmt(last.value, kpiUnit(kpi)) + " " + kpiUnit(kpi) : "";
      const plot = plots.get(kpi);
      if (!plot || !s) continue;
      const [xs, ys] = chartData(s, Date.now() - 3 * 3600 * 1000);
      plot.setData([xs, ys]);
    }
  }

  // One point per minute from the first window to the last: a minute without a window is
  // null, which uPlot draws as a gap (a line across it would invent values).
  function chartData(s, cutoff) {
    const have = [...s.keys()].filter((x) => x >= cutoff).sort((a, b) => a - b);
    const xs = [], ys = [];
    if (!have.length) return [xs, ys];
    for (let x = have[0]; x <= have[have.length - 1]; x += 60000) {
      xs.push(x / 1000);
      ys.push(s.has(x) ? s.get(x) : null);
    }
    return [xs, ys];
  }

  function renderAlerts() {
    const list = [...alerts.values()].filter((a) => a.state !== "cleared" &&
      (selectedDistrict === null || alertDistrict(a) === selectedDistrict));
    const filter = $("alert-filter");
    filter.classList.toggle("hidden", selectedDistrict === null);
    filter.textContent = selectedDistrict === null ? "" : t("filtered", { d: districtName(selectedDistrict) });
    filter.title = t("filter_hint");
    list.sort((a, b) => (SEVERITY_RANK[b.severity] - SEVERITY_RANK[a.severity]) ||
      ((a.state === "acknowledged") - (b.state === "acknowledged")) || (b.level - a.level) ||
      (Date.parse(b.raised_at) - Date.parse(a.raised_at)));
    $("alert-count").textContent = String(list.filter((a) => a.state !== "acknowledged").length);
    $("no-alerts").classList.toggle("hidden", list.length > 0);
    const ol = $("alerts");
    ol.innerHTML = "";
    // A wall shows a few dozen alerts at most; building thousands of items on every
    // render would stall the page. The rest are counted under the list.
    const hidden = Math.max(0, list.length - MAX_ALERT_ITEMS) + omittedAlerts;
    for (const a of list.slice(0, MAX_ALERT_ITEMS)) {
      const li = document.createElement("li");
      li.className = "alert";
      li.dataset.alertId = a.alert_id;
      li.dataset.severity = a.severity;
      li.dataset.state = a.state;
      // The window that raised (or escalated) it was still open: its value may change.
      li.dataset.liveWindow = a.on_live_window ? "true" : "false";
      const subj = a.subject.startsWith("district:") ? districtName(a.subject.slice(9)) :
        a.subject.startsWith("station:") ? t("station") + " " + (stationName.get(a.subject.slice(8)) || a.subject.slice(8)) : a.subject;
      const when = new Date(a.raised_at).toLocaleTimeString(lang === "en" ? "en-GB" : "vi-VN", { hour: "2-digit", minute: "2-digit" });
      let meta = subj + " · " + when;
      if (a.value !== null && a.value !== undefined) {
        meta += " · " + fmt(a.value, a.kpi ? kpiUnit(a.kpi) : "") + (a.threshold != null ? " (" + t("threshold") + " " + fmt(a.threshold) + ")" : "");
      }
      li.innerHTML = '<div class="head"><span class="sev"></span><span class="live"></span><span class="state"></span></div>' +
        '<div class="title"></div><div class="meta"></div><div class="actions"></div>';
      li.querySelector(".sev").textContent = t(a.severity) + (a.level ? " · " + a.level : "");
      li.querySelector(".state").textContent = t(a.state);
      const live = li.querySelector(".live");
      live.textContent = a.on_live_window ? t("live_window") : "";
      live.title = a.on_live_window ? t("live_window_hint") : "";
      live.classList.toggle("hidden", !a.on_live_window);
      // title_en is optional (older records lack it): their Vietnamese title stands in.
      li.querySelector(".title").textContent = lang === "en" && a.title_en ? a.title_en : a.title;
      li.querySelector(".meta").textContent = meta;
      const actions = li.querySelector(".actions");
      if (a.state === "acknowledged") {
        const s = document.createElement("span");
        s.className = "acked";
        s.textContent = t("acked_by", { u: a.acknowledged_by || "?" }) + (a.assignee ? " · " + t("assignee", { u: a.assignee }) : "");
        actions.appendChild(s);
      } else if (role === "operator") {
        const b = document.createElement("button");
        b.className = "ack";
        b.type = "button";
        b.disabled = pendingAcks.has(a.alert_id);
        b.textContent = pendingAcks.has(a.alert_id) ? t("acking") : t("ack");
        b.addEventListener("click", () => acknowledge(a.alert_id));
        actions.appendChild(b);
      }
      ol.appendChild(li);
    }
    const more = $("alerts-omitted");
    more.textContent = hidden ? t("omitted", { n: hidden }) : "";
    more.classList.toggle("hidden", !hidden);
  }

  function renderStatic() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    $("lang").textContent = lang === "vi" ? "EN" : "VI";
    $("province").textContent = config ? config.province[lang] || config.province.vi : "";
    document.title = t("title") + (config ? " — " + config.province[lang] : "");
    $("role").textContent = role ? t(role) : "";
    setConn($("conn").dataset.state);
  }

  function renderAll() { renderStatic(); renderTiles(); renderMap(); renderCharts(); renderAlerts(); renderClock(); }

  function setConn(state) {
    $("conn").dataset.state = state;
    $("conn-text").textContent = t(state);
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return t("sec", { n: s });
    if (s < 3600) return t("min", { n: Math.floor(s / 60) });
    return t("hour", { n: Math.floor(s / 3600) });
  }

  function renderClock() {
    const now = new Date();
    const loc = lang === "en" ? "en-GB" : "vi-VN";
    $("clock-time").textContent = now.toLocaleTimeString(loc, { hour12: false });
    $("clock-date").textContent = now.toLocaleDateString(loc, { weekday: "long", day: "2-digit", month: "2-digit", year: "numeric" });
    const el = $("staleness");
    el.textContent = lastUpdate ? t("updated", { t: ago(Date.now() - lastUpdate) }) : t("never");
    el.classList.toggle("stale", !lastUpdate || Date.now() - lastUpdate > 120000);
    renderNotice();
  }

  function renderNotice() {
    const el = $("notice");
    const shown = notice && Date.now() < Date.parse(notice.until);
    el.classList.toggle("hidden", !shown);
    if (!shown) { el.textContent = ""; return; }
    const at = new Date(notice.at).toLocaleTimeString(lang === "en" ? "en-GB" : "vi-VN", { hour: "2-digit", minute: "2-digit", hour12: false });
    el.dataset.kind = notice.kind;
    el.textContent = t(notice.kind, { t: at });
  }

  // --- state -------------------------------------------------------------------------
  function applyKpi(r) {
    const key = r.kpi + "|" + r.scope + "|" + winLen(r);
    const have = kpis.get(key);
    const start = Date.parse(r.window_start);
    const haveStart = have ? Date.parse(have.window_start) : -Infinity;
    if (!have || start > haveStart || (start === haveStart && r.revision >= have.revision)) kpis.set(key, r);
    // Charts also take later revisions of earlier windows (their final values).
    if (winLen(r) === 60 && r.value !== null && r.scope === "city" && CHARTS.includes(r.kpi)) {
      const skey = r.kpi + "|" + r.scope;
      if (!series.has(skey)) series.set(skey, new Map());
      series.get(skey).set(start, r.value);
    }
  }
  function applyAlert(a) {
    const have = alerts.get(a.alert_id);
    if (have && have.revision > a.revision) return;
    alerts.set(a.alert_id, a);
    if (a.state !== "raised" && a.state !== "escalated") pendingAcks.delete(a.alert_id);
  }

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    setTimeout(() => { renderQueued = false; renderTiles(); renderMap(); renderCharts(); renderAlerts(); }, 250);
  }

  function onFrame(msg) {
    switch (msg.type) {
      case "welcome":
        role = msg.role;
        subscribe();
        epoch = msg.epoch;
        backoff = 1000;
        setConn("open");
        renderStatic();
        break;
      case "resumed":
        resumes += 1;
      // falls through
      case "snapshot":
        if (msg.channel === "alerts" && msg.type === "snapshot") {
          alerts.clear();
          omittedAlerts = msg.omitted || 0;
        }
        for (const item of msg.items) msg.channel === "kpi" ? applyKpi(item) : applyAlert(item);
        for (const h of msg.history || []) {
          const m = new Map();
          for (const [ts, v] of h.points) if (v !== null) m.set(ts, v);
          const old = series.get(h.kpi + "|" + h.scope);
          if (old) for (const [ts, v] of old) if (!m.has(ts)) m.set(ts, v);
          series.set(h.kpi + "|" + h.scope, m);
        }
        // Until the first update, the channel is only complete up to the lowest answer.
        lastSeq[msg.channel] = firstAnswer[msg.channel] ? msg.seq : Math.min(lastSeq[msg.channel], msg.seq);
        firstAnswer[msg.channel] = false;
        if (msg.items.length) lastUpdate = Date.now();
        scheduleRender();
        break;
      case "update":
        lastSeq[msg.channel] = msg.seq;
        for (const item of msg.items) msg.channel === "kpi" ? applyKpi(item) : applyAlert(item);
        lastUpdate = Date.now();
        scheduleRender();
        break;
      case "notice":
        if (msg.kind === "broker_restart") { notice = msg; renderNotice(); }
        break;
      case "command_accepted":
        break;
      case "error":
        console.warn("server error", msg.code, msg.detail);
        if (msg.id && msg.id.startsWith("ack-")) { pendingAcks.clear(); scheduleRender(); }
        break;
    }
  }

  function subscribe() {
    // After a reconnect, ask for what was missed; the server answers "resumed" or, when its
    // replay buffer no longer reaches back (or it is another instance), a fresh snapshot.
    const resume = (ch) => (epoch ? { epoch, seq: lastSeq[ch] } : undefined);
    firstAnswer.kpi = firstAnswer.alerts = true;
    const send = (o) => ws.send(JSON.stringify(o));
    const history = CHARTS.map((k) => ({ kpi: k, scope: "city" }));
    send({ op: "subscribe", sub: "city", channel: "kpi", scopes: ["city"], history, history_hours: 3, resume: resume("kpi") });
    // The map shows 60-s windows only: a third of the records, and of the snapshot.
    send({ op: "subscribe", sub: "map", channel: "kpi", kpis: MAP_KPIS, scopes: ["district:*", "station:*"], window_s: 60, resume: resume("kpi") });
    send({ op: "subscribe", sub: "alerts", channel: "alerts", resume: resume("alerts") });
  }

  function acknowledge(alertId) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    pendingAcks.add(alertId);
    ws.send(JSON.stringify({ op: "ack", alert_id: alertId, id: "ack-" + ++requestId }));
    renderAlerts();
  }

  function connect() {
    const token = params.get("token") || config.token;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + config.ws_path;
    setConn("connecting");
    ws = new WebSocket(url);
    ws.onopen = () => ws.send(JSON.stringify({ op: "auth", token }));
    ws.onmessage = (ev) => { try { onFrame(JSON.parse(ev.data)); } catch (e) { console.error(e); } };
    ws.onclose = () => {
      setConn("closed");
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 15000);
    };
  }

  async function start() {
    const res = await fetch("/config.json", { cache: "no-store" });
    config = await res.json();
    const [districts, stations] = await Promise.all(["districts", "stations"].map((n) =>
      fetch("/static/" + n + ".geojson", { cache: "no-store" }).then((r) => r.json())));
    for (const f of stations.features) { stationDistrict.set(f.id, f.properties.district); stationName.set(f.id, f.properties.name); }
    for (const st of config.water_stations) { stationDistrict.set(st.station_id, st.district); stationName.set(st.station_id, st.name); }
    mapView = window.iocMap.createMap($("map"), districts, stations, selectDistrict);
    $("alert-filter").addEventListener("click", () => selectDistrict(selectedDistrict));
    buildTiles();
    buildCharts();
    renderAll();
    $("lang").addEventListener("click", () => {
      lang = lang === "vi" ? "en" : "vi";
      localStorage.setItem("ioc-wall-lang", lang);
      renderAll();
    });
    setInterval(renderClock, 1000);
    window.addEventListener("resize", () => { buildCharts(); });
    connect();
  }

  // For tests and for a look from the browser console.
  window.iocWall = {
    state: () => ({
      kpis: kpis.size, alerts: alerts.size, role, epoch, lastSeq: { ...lastSeq },
      points: Object.fromEntries([...series].map(([k, m]) => [k, m.size])), resumes,
      notice: notice && !$("notice").classList.contains("hidden") ? $("notice").textContent : null,
    }),
    drop: () => ws && ws.close(), // simulate a network drop: reconnect + resume follow
    chart: (kpi) => plots.get(kpi) && plots.get(kpi).data.map((a) => [...a]),
    filter: () => selectedDistrict,
  };
  start().catch((e) => { console.error(e); setTimeout(() => location.reload(), 5000); });
})();
