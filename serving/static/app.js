/* MNIST digit recognizer: upload or draw a digit, send it to POST /predict, show the answer,
 * and ask "Right?" (POST /feedback).
 * Plain browser JavaScript, no dependencies, no build step. */
"use strict";

(function () {
  // With the 28×28 picture the model saw, shown beside the answer.
  const PREDICT_URL = "/predict?model_view=true";
  const MODEL_URL = "/model";
  const FEEDBACK_URL = "/feedback";
  const STROKE_WIDTH = 18;

  const $ = (id) => document.getElementById(id);
  const els = {
    fileInput: $("file-input"),
    dropZone: $("drop-zone"),
    preview: $("preview"),
    dropPrompt: $("drop-prompt"),
    fileName: $("file-name"),
    predictUpload: $("predict-upload"),
    canvas: $("canvas"),
    clearCanvas: $("clear-canvas"),
    predictCanvas: $("predict-canvas"),
    message: $("message"),
    result: $("result"),
    resultSource: $("result-source"),
    resultDigit: $("result-digit"),
    resultConfidence: $("result-confidence"),
    resultVersion: $("result-version"),
    resultUncertain: $("result-uncertain"),
    modelView: $("model-view"),
    modelViewImage: $("model-view-image"),
    probabilities: $("probabilities"),
    modelInfo: $("model-info"),
    feedback: $("feedback"),
    feedbackChoices: $("feedback-choices"),
    feedbackYes: $("feedback-yes"),
    feedbackDigits: $("feedback-digits"),
    feedbackNotDigit: $("feedback-not-digit"),
    feedbackThanks: $("feedback-thanks"),
  };

  let chosenFile = null;
  let previewUrl = null;
  let busy = false;
  let answered = null; // the prediction the "Right?" question is about: {id, digit}

  /* ---------- messages ---------- */

  function showMessage(text, kind) {
    els.message.textContent = text;
    els.message.className = "message " + (kind === "info" ? "message-info" : "message-error");
    els.message.hidden = false;
  }

  function clearMessage() {
    els.message.hidden = true;
    els.message.textContent = "";
  }

  /* ---------- probability bars ---------- */

  function buildBars() {
    const items = [];
    for (let digit = 0; digit <= 9; digit++) {
      const li = document.createElement("li");
      li.className = "bar";
      li.dataset.digit = String(digit);

      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = "";

      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      track.appendChild(fill);

      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = String(digit);

      li.append(value, track, label);
      items.push(li);
    }
    els.probabilities.replaceChildren(...items);
  }

  function formatPercent(p) {
    const pct = p * 100;
    if (pct >= 99.95 || pct === 0) return pct.toFixed(0) + "%";
    if (pct < 0.1) return "<0.1%";
    return pct.toFixed(1) + "%";
  }

  function updateBars(probabilities, predicted) {
    const bars = els.probabilities.children;
    for (let digit = 0; digit < bars.length; digit++) {
      const p = Number(probabilities[digit]) || 0;
      const bar = bars[digit];
      const pct = Math.max(0, Math.min(1, p)) * 100;
      bar.querySelector(".bar-fill").style.height = pct.toFixed(2) + "%";
      bar.querySelector(".bar-value").textContent = pct >= 0.5 ? Math.round(pct) + "%" : "";
      bar.classList.toggle("is-predicted", digit === predicted);
      bar.setAttribute("aria-label", "Digit " + digit + ": " + formatPercent(p));
      bar.title = "Digit " + digit + ": " + formatPercent(p);
    }
  }

  /* ---------- talking to the API ---------- */

  function errorText(status, body) {
    if (body && typeof body.detail === "string" && body.detail.trim()) return body.detail;
    if (body && Array.isArray(body.detail) && body.detail.length) {
      // FastAPI validation errors: a list of {loc, msg, ...}.
      return body.detail.map((d) => (d && d.msg) || String(d)).join("; ");
    }
    if (status === 413) return "That file is too large. Try a smaller image.";
    if (status === 415) return "That file type is not supported: upload an image.";
    if (status === 503) return "The model is not ready yet. Please try again in a moment.";
    return "Something went wrong (HTTP " + status + "). Please try again.";
  }

  function setBusy(value) {
    busy = value;
    for (const button of [els.predictUpload, els.predictCanvas]) {
      button.disabled = value;
      button.setAttribute("aria-busy", value ? "true" : "false");
    }
    els.result.setAttribute("aria-busy", value ? "true" : "false");
  }

  async function predict(blob, filename, sourceLabel, button, source) {
    if (busy) return;
    clearMessage();
    setBusy(true);
    const originalLabel = button.textContent;
    button.textContent = "Predicting…";
    try {
      const form = new FormData();
      form.append("file", blob, filename);
      form.append("source", source);
      let response;
      try {
        response = await fetch(PREDICT_URL, {
          method: "POST",
          body: form,
          headers: { Accept: "application/json" },
        });
      } catch (networkError) {
        els.result.hidden = true;
        showMessage("Could not reach the server. Check your connection and try again.");
        return;
      }
      let body = null;
      try {
        body = await response.json();
      } catch (parseError) {
        body = null;
      }
      if (!response.ok || !body || !Array.isArray(body.probabilities)) {
        els.result.hidden = true;
        showMessage(response.ok ? "The server sent an unexpected answer." : errorText(response.status, body));
        return;
      }
      showResult(body, sourceLabel);
    } finally {
      button.textContent = originalLabel;
      setBusy(false);
    }
  }

  function showResult(body, sourceLabel) {
    const digit = Number(body.digit);
    els.resultSource.textContent = sourceLabel ? "for your " + sourceLabel : "";
    // An uncertain answer is given in words, not as a digit.
    els.resultDigit.textContent = body.uncertain ? "?" : String(digit);
    els.resultConfidence.textContent = formatPercent(Number(body.confidence) || 0);
    els.resultVersion.textContent = body.model_version != null ? String(body.model_version) : "unknown";
    els.resultUncertain.textContent = body.reason || "Not sure — is this a single digit?";
    els.resultUncertain.hidden = !body.uncertain;
    els.result.classList.toggle("is-uncertain", Boolean(body.uncertain));
    updateBars(body.probabilities, digit);
    // What the model saw: cropped, scaled and centred as MNIST digits are, white on black.
    const viewed = typeof body.model_view === "string" && body.model_view.startsWith("data:image/png");
    if (viewed) els.modelViewImage.src = body.model_view;
    els.modelView.hidden = !viewed;
    askRight(body.prediction_id, digit);
    els.result.hidden = false;
  }

  /* ---------- "Right?": feedback on the answer ---------- */

  function buildDigitButtons() {
    const buttons = [];
    for (let digit = 0; digit <= 9; digit++) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button digit-choice";
      button.dataset.label = String(digit);
      button.textContent = String(digit);
      button.setAttribute("aria-label", "No, it is a " + digit);
      button.addEventListener("click", () => sendFeedback(String(digit)));
      buttons.push(button);
    }
    els.feedbackDigits.replaceChildren(...buttons);
  }

  function askRight(predictionId, digit) {
    answered = predictionId ? { id: predictionId, digit: digit } : null;
    els.feedback.hidden = !answered;
    els.feedbackChoices.hidden = false;
    els.feedbackThanks.hidden = true;
    for (const button of els.feedbackDigits.children) {
      button.hidden = button.dataset.label === String(digit); // "Yes" stands for that one
    }
  }

  async function sendFeedback(label) {
    if (!answered) return;
    const about = answered;
    els.feedbackChoices.hidden = true;
    let response;
    let body = null;
    try {
      response = await fetch(FEEDBACK_URL, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ prediction_id: about.id, label: label }),
      });
      body = await response.json();
    } catch (error) {
      response = response || null;
    }
    if (about !== answered) return; // a new prediction came meanwhile
    if (response && response.ok) {
      answered = null;
      els.feedbackThanks.textContent =
        label === String(about.digit)
          ? "Thanks! Glad it was right."
          : "Thanks! Your correction will be reviewed and may help train the next version.";
    } else {
      els.feedbackChoices.hidden = false;
      els.feedbackThanks.textContent = response
        ? errorText(response.status, body)
        : "Could not reach the server. Check your connection and try again.";
    }
    els.feedbackThanks.hidden = false;
  }

  els.feedbackYes.addEventListener("click", () => answered && sendFeedback(String(answered.digit)));
  els.feedbackNotDigit.addEventListener("click", () => sendFeedback("not_a_digit"));

  async function loadModelInfo() {
    try {
      const response = await fetch(MODEL_URL, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const info = await response.json();
      const parts = ["Model: " + (info.name || "unknown")];
      if (info.version != null) parts.push("version " + info.version);
      if (info.alias) parts.push("(" + info.alias + ")");
      els.modelInfo.textContent = parts.join(" ");
    } catch (error) {
      els.modelInfo.textContent = "Model information is not available right now.";
    }
  }

  /* ---------- upload ---------- */

  function chooseFile(file) {
    chosenFile = file || null;
    clearMessage();
    if (previewUrl) {
      URL.revokeObjectURL(previewUrl);
      previewUrl = null;
    }
    if (!chosenFile) {
      els.preview.hidden = true;
      els.preview.removeAttribute("src");
      els.dropPrompt.hidden = false;
      els.fileName.textContent = "";
      els.dropZone.classList.remove("has-file");
      return;
    }
    els.fileName.textContent = "Selected: " + chosenFile.name;
    els.dropZone.classList.add("has-file");
    previewUrl = URL.createObjectURL(chosenFile);
    els.preview.alt = "Preview of " + chosenFile.name;
    els.preview.src = previewUrl;
    els.preview.hidden = false;
    els.dropPrompt.hidden = true;
  }

  // A file the browser cannot display (say, a text file) gets no preview; the server decides.
  els.preview.addEventListener("error", () => {
    if (!chosenFile) return;
    els.preview.hidden = true;
    els.dropPrompt.hidden = false;
    els.fileName.textContent = "Selected: " + chosenFile.name + " (no preview available)";
  });

  els.fileInput.addEventListener("change", () => {
    chooseFile(els.fileInput.files && els.fileInput.files[0]);
  });

  for (const type of ["dragenter", "dragover"]) {
    els.dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
      els.dropZone.classList.add("is-dragover");
    });
  }
  for (const type of ["dragleave", "dragend"]) {
    els.dropZone.addEventListener(type, (event) => {
      if (event.type === "dragleave" && els.dropZone.contains(event.relatedTarget)) return;
      els.dropZone.classList.remove("is-dragover");
    });
  }
  els.dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    els.dropZone.classList.remove("is-dragover");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) {
      showMessage("Drop an image file (from your computer) onto the box.");
      return;
    }
    try {
      // Keep the input in step with what was dropped, where the browser allows it.
      els.fileInput.files = files;
    } catch (error) {
      /* older browsers: the dropped file is still remembered below */
    }
    chooseFile(files[0]);
  });
  // A file dropped beside the box should not make the browser navigate away from the page.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if (!els.dropZone.contains(event.target)) event.preventDefault();
    });
  }

  els.predictUpload.addEventListener("click", () => {
    if (!chosenFile) {
      els.result.hidden = true;
      showMessage("Choose or drop an image first.", "info");
      return;
    }
    predict(chosenFile, chosenFile.name, "image", els.predictUpload, "upload");
  });

  /* ---------- drawing canvas ---------- */

  const ctx = els.canvas.getContext("2d");
  let drawing = false;
  let hasDrawing = false;
  let last = null;

  function clearCanvas() {
    ctx.save();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, els.canvas.width, els.canvas.height);
    ctx.restore();
    hasDrawing = false;
  }

  function canvasPoint(event) {
    const rect = els.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * els.canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * els.canvas.height) / rect.height,
    };
  }

  function strokeTo(point) {
    ctx.strokeStyle = "#000000";
    ctx.fillStyle = "#000000";
    ctx.lineWidth = STROKE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (!last) {
      ctx.beginPath();
      ctx.arc(point.x, point.y, STROKE_WIDTH / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.beginPath();
      ctx.moveTo(last.x, last.y);
      ctx.lineTo(point.x, point.y);
      ctx.stroke();
    }
    last = point;
    hasDrawing = true;
  }

  els.canvas.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    drawing = true;
    last = null;
    try {
      els.canvas.setPointerCapture(event.pointerId);
    } catch (error) {
      /* capture is a nicety */
    }
    strokeTo(canvasPoint(event));
  });

  els.canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    event.preventDefault();
    const events = typeof event.getCoalescedEvents === "function" ? event.getCoalescedEvents() : [];
    for (const e of events.length ? events : [event]) strokeTo(canvasPoint(e));
  });

  function endStroke() {
    drawing = false;
    last = null;
  }
  els.canvas.addEventListener("pointerup", endStroke);
  els.canvas.addEventListener("pointercancel", endStroke);
  els.canvas.addEventListener("lostpointercapture", endStroke);

  els.clearCanvas.addEventListener("click", () => {
    clearCanvas();
    clearMessage();
  });

  els.predictCanvas.addEventListener("click", () => {
    if (!hasDrawing) {
      els.result.hidden = true;
      showMessage("Draw a digit on the canvas first.", "info");
      return;
    }
    els.canvas.toBlob((blob) => {
      if (!blob) {
        showMessage("Could not read the drawing. Please try again.");
        return;
      }
      predict(blob, "canvas.png", "drawing", els.predictCanvas, "canvas");
    }, "image/png");
  });

  /* ---------- start ---------- */

  buildBars();
  buildDigitButtons();
  clearCanvas();
  loadModelInfo();
})();
