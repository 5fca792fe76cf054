// Live progress, without inline script: every element with data-progress="URL" is
// refreshed from that JSON endpoint every 1.5 s while its campaign is scheduled or
// sending; [data-field=NAME] children get the new figures, <progress> its value. A box
// with data-reload-on-change (a campaign's own page) reloads once the campaign stops
// (finished, paused, cancelled): its actions and times follow the status (a finished
// campaign kept Pause and Cancel, and "Finished: -").
"use strict";
(function () {
  var EVERY_MS = 1500;
  var LIVE = { scheduled: true, sending: true };

  function update(box, data) {
    box.querySelectorAll("[data-field]").forEach(function (el) {
      var name = el.getAttribute("data-field");
      if (Object.prototype.hasOwnProperty.call(data, name)) {
        el.textContent = String(data[name]);
        if (name === "status") {
          el.className = "status status-" + String(data.status);
        }
      }
    });
    box.querySelectorAll("progress").forEach(function (bar) {
      bar.max = Math.max(1, data.total);
      bar.value = data.done;
      bar.textContent = data.percent + "%";
    });
    var before = box.getAttribute("data-status");
    box.setAttribute("data-status", String(data.status));
    var ended = before && before !== String(data.status) && !LIVE[data.status];
    if (ended && box.hasAttribute("data-reload-on-change")) {
      window.location.reload();
    }
  }

  function poll(box) {
    var url = box.getAttribute("data-progress");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok || response.headers.get("content-type").indexOf("json") < 0) {
          throw new Error("no progress");
        }
        return response.json();
      })
      .then(function (data) {
        update(box, data);
        if (LIVE[data.status]) {
          window.setTimeout(function () { poll(box); }, EVERY_MS);
        }
      })
      .catch(function () {
        window.setTimeout(function () { poll(box); }, EVERY_MS * 4);
      });
  }

  document.querySelectorAll("[data-progress]").forEach(function (box) {
    window.setTimeout(function () { poll(box); }, EVERY_MS);
  });
})();
