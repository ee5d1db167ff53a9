/* The wall's district map: Leaflet on the shipped GeoJSON (districts.geojson, stations.geojson),
   offline: no tile layer, a plain background. wall.js owns the data; this file draws it. */
"use strict";
(function () {
  const STATUS_COLOURS = ["#22c55e", "#eab308", "#f97316", "#ef4444"];
  const NO_DATA = "#334155";

  // el: the container; districts/stations: FeatureCollections; onSelect(code): a district was
  // clicked. Returns { render(view), resize() }.
  function createMap(el, districts, stations, onSelect) {
    const map = L.map(el, {
      // A wall is not browsed: the province fills the panel, nothing pans or zooms.
      zoomControl: false, attributionControl: false, dragging: false, scrollWheelZoom: false,
      doubleClickZoom: false, boxZoom: false, keyboard: false, touchZoom: false, zoomSnap: 0,
    });
    const cells = new Map(); // code -> polygon layer
    const labels = new Map(); // code -> tooltip at the cell's centroid
    const markers = new Map(); // station id -> { marker, tip, kind }
    const layer = L.geoJSON(districts, {
      style: () => ({ color: "#0b1220", weight: 2, fillColor: NO_DATA, fillOpacity: 0.8 }),
      onEachFeature: (f, lyr) => {
        cells.set(f.id, lyr);
        lyr.on("click", () => onSelect(f.id));
      },
    }).addTo(map);
    const fit = () => map.fitBounds(layer.getBounds(), { padding: [6, 6] });
    fit();
    for (const f of districts.features) {
      const [lon, lat] = f.properties.label;
      const tip = L.tooltip({ permanent: true, direction: "center", className: "district-label", interactive: false })
        .setLatLng([lat, lon]).setContent("");
      tip.addTo(map);
      labels.set(f.id, tip);
    }
    for (const f of stations.features) {
      const [lon, lat] = f.geometry.coordinates;
      const kind = f.properties.kind;
      const marker = L.circleMarker([lat, lon], {
        radius: kind === "water" ? 7 : 5, color: "#e6edf7", weight: 2, fillColor: NO_DATA, fillOpacity: 1,
        interactive: false, // clicks go through to the district under it
      }).addTo(map);
      // Water levels to the right, AQI to the left: stations of one district do not overlap.
      const tip = L.tooltip({ permanent: true, direction: kind === "water" ? "right" : "left",
        offset: [kind === "water" ? 8 : -6, 0], className: "station-value " + kind, interactive: false })
        .setLatLng([lat, lon]).setContent("");
      tip.addTo(map);
      markers.set(f.id, { marker, tip, kind, district: f.properties.district, name: f.properties.name });
      const dom = marker.getElement();
      dom.dataset.station = f.id;
      dom.dataset.kind = kind;
    }
    for (const [code, lyr] of cells) lyr.getElement().dataset.district = code;
    // The panel gets its final size after the page lays out (fonts, legend): refit then.
    new ResizeObserver(() => resize()).observe(el);

    // view: { district(code) -> {status, name, text}, station(id) -> {status, text, title}, selected }
    function render(view) {
      for (const [code, lyr] of cells) {
        const d = view.district(code);
        const selected = view.selected === code;
        lyr.setStyle({
          fillColor: d.status === null ? NO_DATA : STATUS_COLOURS[d.status],
          color: selected ? "#e6edf7" : "#0b1220", weight: selected ? 4 : 2,
        });
        if (selected) lyr.bringToFront();
        const dom = lyr.getElement();
        dom.dataset.status = d.status === null ? "" : String(d.status);
        dom.dataset.selected = selected ? "true" : "false";
        labels.get(code).setContent('<b>' + esc(d.name) + "</b>" + (d.text ? "<br>" + esc(d.text) : ""));
      }
      for (const [id, m] of markers) {
        const s = view.station(id, m);
        m.marker.setStyle({ fillColor: s.status === null ? NO_DATA : STATUS_COLOURS[s.status] });
        m.marker.bringToFront();
        m.marker.getElement().dataset.status = s.status === null ? "" : String(s.status);
        m.tip.setContent(esc(s.text));
        const tipEl = m.tip.getElement();
        if (tipEl) { tipEl.dataset.station = id; tipEl.title = s.title; }
      }
    }
    function resize() { map.invalidateSize(); fit(); }
    return { render, resize };
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  }

  window.iocMap = { createMap };
})();
