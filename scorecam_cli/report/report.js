// scorecam report: renders pages of cards from the JSON in #report-data (no network, no libs).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var state = { text: "", method: "", sort: "probability", page: 0 };
  var shown = [];

  function byId(id) { return document.getElementById(id); }

  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function matches(map) {
    if (state.method && map.method !== state.method) { return false; }
    return !state.text || String(map.class_name || map.class_index).toLowerCase().indexOf(state.text) >= 0;
  }

  function update() {
    shown = [];
    data.cards.forEach(function (card) {
      var maps = card.maps.filter(matches);
      if (!maps.length) { return; }
      var best = Math.max.apply(null, maps.map(function (m) { return m.probability || 0; }));
      shown.push({ card: card, maps: maps, best: best });
    });
    if (state.sort === "name") {
      shown.sort(function (a, b) { return a.card.input < b.card.input ? -1 : a.card.input > b.card.input ? 1 : 0; });
    } else {
      shown.sort(function (a, b) { return b.best - a.best; });
    }
    state.page = Math.min(state.page, Math.max(0, Math.ceil(shown.length / data.page_size) - 1));
    render();
  }

  function image(src, alt) {
    var img = make("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = alt;
    img.src = src;
    return img;
  }

  function original(card) {
    var box = make("div", "original");
    if (card.original) {
      var frame = make("div", "frame");  // the boxes are placed in percent of the image
      frame.appendChild(image(card.original, "input " + card.input));
      (card.boxes || []).forEach(function (b) {
        var outline = make("div", "box");
        outline.style.left = Number(b.left) + "%";
        outline.style.top = Number(b.top) + "%";
        outline.style.width = Number(b.width) + "%";
        outline.style.height = Number(b.height) + "%";
        outline.appendChild(make("span", "box-label", String(b.label)));
        frame.appendChild(outline);
      });
      box.appendChild(frame);
    } else {
      box.appendChild(make("div", "missing", "original not found: overlays only"));
    }
    box.appendChild(make("div", "input-name", card.input));
    if (card.size) { box.appendChild(make("div", "meta", card.size[0] + " x " + card.size[1] + " px")); }
    return box;
  }

  function figure(map) {
    var fig = make("figure", "map");
    var link = make("a");
    link.href = map.href;
    link.appendChild(map.thumb ? image(map.thumb, map.method + " " + map.class_name) : make("span", "meta", "no preview"));
    fig.appendChild(link);
    var caption = make("figcaption");
    caption.appendChild(make("b", "method", map.method));
    caption.appendChild(document.createTextNode(" p=" + Number(map.probability).toFixed(3)));
    caption.appendChild(make("div", "meta", map.model + " / " + map.layer));
    caption.appendChild(make("div", "meta", map.passes ? map.passes + " masked passes (" + map.saved + " saved)" : "no masked passes"));
    fig.appendChild(caption);
    return fig;
  }

  function cardElement(item) {
    var card = make("article", "card");
    card.appendChild(original(item.card));
    var classes = make("div", "classes");
    var rows = {};
    var order = [];
    item.maps.forEach(function (map) {  // one row per class, its methods side by side
      var key = String(map.class_index);
      if (!rows[key]) { rows[key] = []; order.push(key); }
      rows[key].push(map);
    });
    order.forEach(function (key) {
      var maps = rows[key].sort(function (a, b) { return a.method < b.method ? -1 : 1; });
      var row = make("section", "class-row");
      row.appendChild(make("h3", "class-name", (maps[0].class_name || "class") + " (#" + key + ")"));
      var methods = make("div", "methods");
      maps.forEach(function (map) { methods.appendChild(figure(map)); });
      row.appendChild(methods);
      classes.appendChild(row);
    });
    card.appendChild(classes);
    return card;
  }

  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / data.page_size));
    var start = state.page * data.page_size;
    var fragment = document.createDocumentFragment();
    shown.slice(start, start + data.page_size).forEach(function (item) { fragment.appendChild(cardElement(item)); });
    byId("cards").replaceChildren(fragment);
    byId("count").textContent = shown.length + " of " + data.cards.length + " inputs";
    byId("page").textContent = "page " + (state.page + 1) + " of " + pages;
    byId("prev").disabled = state.page === 0;
    byId("next").disabled = state.page >= pages - 1;
  }

  byId("filter").addEventListener("input", function (event) {
    state.text = event.target.value.trim().toLowerCase();
    state.page = 0;
    update();
  });
  byId("method").addEventListener("change", function (event) { state.method = event.target.value; state.page = 0; update(); });
  byId("sort").addEventListener("change", function (event) { state.sort = event.target.value; update(); });
  byId("prev").addEventListener("click", function () { state.page -= 1; render(); window.scrollTo(0, 0); });
  byId("next").addEventListener("click", function () { state.page += 1; render(); window.scrollTo(0, 0); });
  update();
  document.body.setAttribute("data-ready", "1");
  if (window.performance && performance.mark) { performance.mark("scorecam-ready"); }
})();
