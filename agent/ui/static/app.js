// gatewatch's local page: live progress of a run and the heartbeat that keeps the agent's page open.
// No inline script (the Content-Security-Policy forbids it); every form works without this file.
"use strict";

(function () {
  var tokenMeta = document.querySelector('meta[name="gatewatch-token"]');
  var token = tokenMeta ? tokenMeta.getAttribute("content") : "";
  var HEARTBEAT_MS = 5000;
  var POLL_MS = 700;

  function post(path) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-Gatewatch-Token": token },
    });
  }

  // The agent stops a while after the last open page stopped saying it is there.
  function heartbeat() {
    post("/api/heartbeat").catch(function () {});
  }
  heartbeat();
  setInterval(heartbeat, HEARTBEAT_MS);

  var PHASES = {
    idle: "not started",
    preparing: "getting the test list and finding the network",
    measuring: "measuring",
    uploading: "uploading the results",
    finished: "finished",
    cancelled: "cancelled",
    failed: "failed",
  };

  function text(id, value) {
    var el = document.getElementById(id);
    if (el && el.textContent !== value) {
      el.textContent = value;
    }
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) {
      return "unknown";
    }
    if (seconds < 60) {
      return Math.round(seconds) + " s";
    }
    return Math.round(seconds / 60) + " min";
  }

  var section = document.getElementById("progress");
  if (!section) {
    return;
  }
  var bar = document.getElementById("bar");
  var start = document.getElementById("start");
  var cancel = document.getElementById("cancel");
  var wasRunning = false;

  function show(p) {
    text("phase", PHASES[p.phase] || p.phase);
    text("done", p.done + " of " + p.total);
    text("blocked", String(p.blocked));
    text("left", p.running ? duration(p.seconds_left) : "–");
    text("current", p.current || "–");
    text("message", p.message || "");
    if (bar) {
      bar.max = Math.max(p.total, 1);
      bar.value = p.done;
      bar.textContent = p.done + "/" + p.total;
    }
    if (start) {
      start.disabled = p.running;
    }
    if (cancel) {
      cancel.disabled = !p.running;
    }
    var link = document.getElementById("done-link");
    if (link) {
      link.hidden = p.phase !== "finished" && p.phase !== "cancelled";
    }
    section.setAttribute("data-phase", p.phase);
    wasRunning = p.running;
  }

  function poll() {
    fetch(section.getAttribute("data-poll"), { credentials: "same-origin" })
      .then(function (r) {
        return r.ok ? r.json() : null;
      })
      .then(function (p) {
        if (p) {
          show(p);
        }
      })
      .catch(function () {})
      .then(function () {
        setTimeout(poll, wasRunning ? POLL_MS : POLL_MS * 3);
      });
  }
  poll();
})();

// A run's results: the collector's verdicts, asked once the page is shown (a slow collector never holds
// the page itself; without script, each measurement's own page asks).
(function () {
  var status = document.getElementById("collector-status");
  if (!status) {
    return;
  }
  var spans = document.querySelectorAll("span.collector[data-uid]");
  if (!spans.length) {
    return;
  }
  status.textContent = "Asking the collector for its verdicts…";
  spans.forEach(function (span) {
    span.textContent = "asking…";
  });
  fetch(status.getAttribute("data-verdicts"), { credentials: "same-origin" })
    .then(function (r) {
      return r.ok ? r.json() : { verdicts: {}, failure: "http_" + r.status };
    })
    .then(function (answer) {
      spans.forEach(function (span) {
        var words = answer.verdicts[span.getAttribute("data-uid")];
        span.textContent = words || "not listed by the collector (yet)";
      });
      status.textContent = answer.failure
        ? "The collector could not be asked: " + answer.failure + "."
        : "";
    })
    .catch(function () {
      status.textContent = "The collector could not be asked.";
    });
})();
