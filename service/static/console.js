// voicecheck console: uploads with per-file progress. Without this script the upload form
// still works as a plain form post.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) { node.textContent = text; }
    return node;
  }

  function setup() {
    var form = document.getElementById("upload-form");
    if (!form) { return; }
    var input = document.getElementById("file");
    var drop = document.getElementById("drop");
    var queue = document.getElementById("queue");
    var section = document.getElementById("queue-section");
    var maxBytes = parseInt(form.getAttribute("data-max-bytes") || "0", 10);
    var pending = [];
    var busy = false;
    var count = 0;

    function describe(item, text, cls) {
      item.status.textContent = "";
      item.status.appendChild(document.createTextNode(text));
      if (cls) { item.li.className = "item " + cls; }
    }

    function addFiles(files) {
      Array.prototype.forEach.call(files, function (file) {
        count += 1;
        var li = el("li", { "class": "item" });
        var name = el("span", { "class": "name" }, file.name);
        var bar = el("progress", { max: "100", value: "0", id: "progress-" + count, "aria-label": "Upload of " + file.name });
        var status = el("span", { "class": "status" }, "Waiting");
        li.appendChild(name); li.appendChild(bar); li.appendChild(status);
        queue.appendChild(li);
        var item = { file: file, li: li, bar: bar, status: status };
        if (maxBytes && file.size > maxBytes) {
          bar.remove();
          describe(item, "Not uploaded: " + file.name + " is " + (file.size / 1048576).toFixed(1) +
            " MB; at most " + (maxBytes / 1048576).toFixed(0) + " MB is accepted per file.", "failed");
          return;
        }
        pending.push(item);
      });
      section.hidden = false;
      next();
    }

    function finish(item, xhr) {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      item.bar.remove();
      if (xhr.status === 200 && body && body.results && body.results.length) {
        var r = body.results[0];
        if (r.error) {
          describe(item, "Not checked: " + r.error.detail, "failed");
        } else {
          describe(item, "", "done");
          var badge = el("span", { "class": "badge " + r.verdict }, r.verdict_label);
          item.status.appendChild(badge);
          item.status.appendChild(document.createTextNode(" score " + Number(r.score).toFixed(2) + " · "));
          item.status.appendChild(el("a", { href: r.url }, "Open the result"));
        }
      } else if (xhr.status === 401) {
        describe(item, "Your session has ended. ", "failed");
        item.status.appendChild(el("a", { href: "/sign-in?next=/upload" }, "Sign in again"));
      } else if (body && body.detail) {
        describe(item, "Not checked: " + body.detail, "failed");
      } else {
        describe(item, "Not checked: the service answered " + xhr.status + ". Try again.", "failed");
      }
    }

    function next() {
      if (busy || !pending.length) { return; }
      busy = true;
      var item = pending.shift();
      var data = new FormData();
      data.append("file", item.file, item.file.name);
      data.append("csrf_token", csrfToken());
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.getAttribute("action"));
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-Requested-With", "fetch");
      describe(item, "Uploading");
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) { item.bar.value = Math.round(100 * e.loaded / e.total); }
      };
      xhr.upload.onload = function () {
        item.bar.removeAttribute("value");
        describe(item, "Analysing");
      };
      xhr.onload = function () { finish(item, xhr); busy = false; next(); };
      xhr.onerror = function () {
        item.bar.remove();
        describe(item, "Not checked: the connection failed. Try again.", "failed");
        busy = false; next();
      };
      xhr.send(data);
    }

    input.addEventListener("change", function () {
      if (input.files.length) { addFiles(input.files); input.value = ""; }
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (input.files.length) { addFiles(input.files); input.value = ""; } else { input.click(); }
    });
    ["dragenter", "dragover"].forEach(function (type) {
      drop.addEventListener(type, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (type) {
      drop.addEventListener(type, function (e) { e.preventDefault(); drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) { addFiles(e.dataTransfer.files); }
    });
  }

  // On a result page, the times in the table of scores play the call from that point.
  function setupSeek() {
    var player = document.getElementById("player");
    if (!player) { return; }
    document.querySelectorAll("[data-seek]").forEach(function (button) {
      button.addEventListener("click", function () {
        player.currentTime = parseFloat(button.getAttribute("data-seek"));
        player.play().catch(function () { /* a browser may refuse; the position is set */ });
        player.focus();
      });
    });
  }

  function start() { setup(); setupSeek(); }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
