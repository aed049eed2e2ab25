// renkei console: the one script (served by the hub; no external assets).
document.addEventListener("DOMContentLoaded", function () {
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input.pick").forEach(function (box) { box.checked = all.checked; });
    });
  }
});
// Acting on every dead letter runs as paged work: each step answers with its progress and a
// form for the next one, submitted here at once (without script: the operator presses 続ける).
// The work can be paused (WCAG 2.2.2): the 一時停止 button, which takes focus and is described
// by the progress, or Esc. The step under way still answers; its page then stops, says so and
// offers 続ける. The pause is kept per confirmation (its "looked" time) in sessionStorage.
document.addEventListener("DOMContentLoaded", function () {
  var next = document.querySelector("form#continue[data-auto]");
  if (!next) { return; }
  var key = "renkei.paused." + next.elements.looked.value;
  var status = document.getElementById("all-progress");
  var pause = document.getElementById("pause");
  var resume = document.getElementById("resume");
  function paused() {
    try { return window.sessionStorage.getItem(key) === "1"; } catch (e) { return false; }
  }
  function stop() {
    if (paused()) { return; }
    try { window.sessionStorage.setItem(key, "1"); } catch (e) { /* then it cannot pause */ }
    status.textContent = next.getAttribute("data-pausing");
    pause.hidden = true;
    resume.focus();
  }
  next.addEventListener("submit", function () {  // the operator's 続ける (not submit() below)
    try { window.sessionStorage.removeItem(key); } catch (e) { /* nothing kept */ }
  });
  if (paused()) {
    status.textContent = next.getAttribute("data-paused");
    resume.focus();
    return;
  }
  pause.hidden = false;
  document.getElementById("pause-note").hidden = false;
  pause.addEventListener("click", stop);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { stop(); }
  });
  pause.focus();
  next.submit();
});
