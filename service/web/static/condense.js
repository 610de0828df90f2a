/* Condense web pages: live updates of the job page from the API's server-sent events.
 *
 * The job page (<article id="job" data-events-url=... data-results-url=...>) opens an EventSource on
 * /api/v1/jobs/<id>/events (the session cookie authenticates it) and updates the status, stage, progress bar,
 * time left and messages in place. When the stream sends "end" (the job is final) it fetches the page's results
 * part (error, downloads, report table) and swaps it in. While the job is queued it re-reads the job's JSON every
 * few seconds for its queue position (jobs ahead of it end without an event of this job). Everything else works
 * without this script.
 */
(function () {
  "use strict";

  var QUEUE_POLL_MS = 3000; // how often a queued job's page re-reads its queue position

  function byId(id) {
    return document.getElementById(id);
  }

  function setText(id, text) {
    var element = byId(id);
    if (element) {
      element.textContent = text;
    }
  }

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (error) {
      return {};
    }
  }

  function pad(number) {
    return (number < 10 ? "0" : "") + number;
  }

  // Seconds as 1:15 or 1:02:05, like service.progress.format_duration.
  function duration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) {
      return "—";
    }
    var whole = Math.round(seconds);
    var hours = Math.floor(whole / 3600);
    var minutes = Math.floor((whole % 3600) / 60);
    var secs = whole % 60;
    return hours ? hours + ":" + pad(minutes) + ":" + pad(secs) : minutes + ":" + pad(secs);
  }

  function setStatus(status) {
    var element = byId("job-status");
    if (element && typeof status === "string" && status) {
      element.textContent = status;
      element.className = "status status-" + status;
    }
  }

  function setProgress(progress) {
    if (typeof progress !== "number" || !isFinite(progress)) {
      return;
    }
    var value = Math.min(Math.max(progress, 0), 1);
    var text = (value * 100).toFixed(1) + " %";
    var bar = byId("job-progress");
    if (bar) {
      bar.value = value;
      bar.textContent = text;
    }
    setText("job-progress-text", text);
  }

  function utcText(seconds) {
    var date = new Date(seconds * 1000);
    return date.getUTCFullYear() + "-" + pad(date.getUTCMonth() + 1) + "-" + pad(date.getUTCDate()) + " " +
      pad(date.getUTCHours()) + ":" + pad(date.getUTCMinutes()) + ":" + pad(date.getUTCSeconds()) + " UTC";
  }

  // Started / Finished, shown once the job has them (like the server-rendered page after a reload).
  function setTime(name, seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) {
      return;
    }
    var time = byId("job-" + name);
    if (time) {
      time.textContent = utcText(seconds);
      time.setAttribute("datetime", new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "+00:00"));
    }
    [byId("job-" + name + "-label"), byId("job-" + name + "-value")].forEach(function (element) {
      if (element) {
        element.hidden = false;
      }
    });
  }

  // The job as the API shows it (the session cookie authenticates GETs): the times the events do not carry.
  function refreshJob(root) {
    var url = root.getAttribute("data-job-url");
    if (!url || !window.fetch) {
      return;
    }
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (job) {
        if (job) {
          setTime("started", job.started_at);
          setTime("finished", job.finished_at);
          setQueuePosition(job.queue_position);
        }
      })
      .catch(function () {});
  }

  // "N jobs ahead" while queued (jobs ahead finish or are cancelled without an event of this job); hidden after.
  function setQueuePosition(position) {
    var value = byId("job-queue");
    var label = byId("job-queue-label");
    var queued = typeof position === "number" && isFinite(position);
    if (value) {
      value.textContent = queued ? position + (position === 1 ? " job ahead" : " jobs ahead") : "";
      value.hidden = !queued;
    }
    if (label) {
      label.hidden = !queued;
    }
  }

  // A flash describes the moment of the last redirect ("Job submitted: it is queued."): gone once the job moves on.
  function clearFlashes() {
    var flashes = document.querySelector(".flashes");
    if (flashes) {
      flashes.parentNode.removeChild(flashes);
    }
  }

  function showDelete(visible) {
    var form = byId("delete-form");
    if (form) {
      form.hidden = !visible;
    }
  }

  function applyState(data) {
    setStatus(data.status);
    if (typeof data.stage === "string" && data.stage) {
      setText("job-stage", data.stage);
    }
    setProgress(data.progress);
    if (typeof data.eta_s === "number") {
      setText("job-eta", duration(data.eta_s));
    }
  }

  function watchJob(root) {
    var eventsUrl = root.getAttribute("data-events-url");
    var resultsUrl = root.getAttribute("data-results-url");
    if (!eventsUrl || !window.EventSource) {
      return;
    }
    var source = new EventSource(eventsUrl);
    root.setAttribute("data-live", "connecting");
    source.addEventListener("open", function () {
      root.setAttribute("data-live", "open");
    });
    var shownStatus = byId("job-status") ? byId("job-status").textContent : "";
    var queueTimer = window.setInterval(function () {
      if (shownStatus === "queued") {
        refreshJob(root);
      } else {
        setQueuePosition(null);
        window.clearInterval(queueTimer);
      }
    }, QUEUE_POLL_MS);
    source.addEventListener("progress", function (event) {
      var data = parse(event);
      clearFlashes();
      applyState({ stage: data.stage, progress: data.progress, eta_s: data.eta_s });
      if (typeof data.message === "string") {
        setText("job-detail", data.message);
      }
    });
    source.addEventListener("status", function (event) {
      var data = parse(event);
      if (data.status !== shownStatus) {
        clearFlashes();
        shownStatus = data.status;
      }
      setStatus(data.status);
      showDelete(data.status !== "running");
      if (data.status === "running") {
        refreshJob(root);
      }
      if (typeof data.error === "string" && data.error) {
        setText("job-message", data.error);
      } else if (typeof data.message === "string" && data.message) {
        setText("job-message", data.message);
      }
    });
    source.addEventListener("cancel_requested", function () {
      setText("job-message", "Cancel requested: the job stops within seconds.");
    });
    source.addEventListener("end", function (event) {
      source.close();
      var data = parse(event);
      if (data.status === "deleted") {
        setStatus("deleted");
        setText("job-message", "This job has been deleted.");
        root.setAttribute("data-live", "ended");
        return;
      }
      applyState(data);
      setText("job-eta", "—");
      showDelete(true);
      refreshJob(root);
      var cancel = byId("cancel-form");
      if (cancel) {
        cancel.parentNode.removeChild(cancel);
      }
      if (!resultsUrl) {
        root.setAttribute("data-live", "ended");
        return;
      }
      fetch(resultsUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          var results = byId("job-results");
          if (results && html !== null) {
            results.innerHTML = html; // our own server-rendered, escaped template
          }
          root.setAttribute("data-live", "ended");
        })
        .catch(function () {
          setText("job-message", "The job has ended: reload the page to see its results.");
          root.setAttribute("data-live", "ended");
        });
    });
    // EventSource reconnects by itself (with Last-Event-ID) after an error or when the server ends a long stream.
  }

  function start() {
    var root = byId("job");
    if (root) {
      watchJob(root);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
