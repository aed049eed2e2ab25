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
document.addEventListener("DOMContentLoaded", function () {
  var next = document.querySelector("form#continue[data-auto]");
  if (next) { next.submit(); }
});
