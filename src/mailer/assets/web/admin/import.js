// The Lists pages' script, without inline script (the CSP has none):
// - a running import's page ([data-import-progress="URL"]) polls that JSON every second,
//   moves its <progress> bar and figures, and reloads itself once the import is over,
//   to show the report;
// - the upload form ([data-upload-limit="BYTES"]) says at once when the chosen file is
//   over the limit, instead of sending it (the server refuses it too).
"use strict";
(function () {
  var EVERY_MS = 1000;

  function poll(box) {
    var url = box.getAttribute("data-import-progress");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("no progress"); }
        return response.json();
      })
      .then(function (data) {
        if (data.finished) {
          window.location.reload();
          return;
        }
        box.querySelectorAll("progress").forEach(function (bar) {
          bar.value = data.percent;
          bar.textContent = data.percent + "%";
        });
        box.querySelectorAll("[data-field]").forEach(function (el) {
          var name = el.getAttribute("data-field");
          if (Object.prototype.hasOwnProperty.call(data, name)) {
            el.textContent = String(data[name]);
          }
        });
        window.setTimeout(function () { poll(box); }, EVERY_MS);
      })
      .catch(function () {
        window.setTimeout(function () { poll(box); }, EVERY_MS * 3);
      });
  }

  function guardSize(form) {
    var limit = Number(form.getAttribute("data-upload-limit"));
    var input = form.querySelector("input[type=file]");
    var warning = form.querySelector("#file-too-large");
    function tooLarge() {
      return input.files.length > 0 && input.files[0].size > limit;
    }
    input.addEventListener("change", function () { warning.hidden = !tooLarge(); });
    form.addEventListener("submit", function (event) {
      if (tooLarge()) {
        warning.hidden = false;
        event.preventDefault();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-import-progress]").forEach(poll);
    document.querySelectorAll("form[data-upload-limit]").forEach(guardSize);
  });
})();
