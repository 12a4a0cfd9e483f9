// Enhancements only: every page works without this file. Dialogs open in place (the links they sit on lead to
// the same form as a page), toasts go away by themselves, the SMS button counts down its 60 s.
(function () {
  "use strict";
  // Capturing, so that a dialog opens before htmx's boost would follow the link to the same form as a page.
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-dialog"));
      if (dialog && typeof dialog.showModal === "function") {
        event.preventDefault();
        event.stopPropagation();
        dialog.showModal();
        var first = dialog.querySelector("input:not([type=hidden]), button:not([data-dialog-close])");
        if (first) first.focus();
      }
      return;
    }
    var closer = event.target.closest("[data-dialog-close]");
    if (closer && closer.closest("dialog")) {
      event.preventDefault();
      closer.closest("dialog").close();
      return;
    }
    var toastClose = event.target.closest("[data-toast-close]");
    if (toastClose) toastClose.closest(".toast").remove();
  }, true);

  function countDown(root) {
    (root || document).querySelectorAll("[data-countdown]").forEach(function (button) {
      var left = parseInt(button.getAttribute("data-countdown"), 10);
      var text = button.querySelector(".semi-button-content") || button;
      var label = button.getAttribute("data-label");
      var template = button.getAttribute("data-wait-label");
      if (!(left > 0) || button.dataset.counting) return;
      button.dataset.counting = "1";
      button.disabled = true;
      var tick = function () {
        if (left <= 0) {
          button.disabled = false;
          text.textContent = label;
          return;
        }
        text.textContent = template.replace("%s", String(left));
        left -= 1;
        setTimeout(tick, 1000);
      };
      tick();
    });
  }

  function dismissToasts(root) {
    (root || document).querySelectorAll(".toast:not([data-timed])").forEach(function (toast) {
      toast.setAttribute("data-timed", "1");
      setTimeout(function () { toast.remove(); }, 5000);
    });
  }

  function enhance(root) {
    countDown(root);
    dismissToasts(document);
    (root || document).querySelectorAll("dialog[data-open]").forEach(function (dialog) {
      if (!dialog.open) dialog.showModal();
    });
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  document.addEventListener("htmx:load", function (event) { enhance(event.target); });
})();
