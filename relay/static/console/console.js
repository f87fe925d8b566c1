// Paywalls Relay console: progressive enhancement only (every page works without JavaScript).
// Kept as a file so the CSP needs no 'unsafe-inline'.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // Copy buttons: <button data-copy="element-id">; the token text stays selectable when the clipboard is refused.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      var status = document.getElementById(button.getAttribute("data-copy") + "-status");
      if (!source || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        if (status) { status.textContent = "Copied."; }
      }, function () {
        if (status) { status.textContent = "Copy refused by the browser: select the text and copy it."; }
      });
    });
  });
});
