// Light or dark before the first paint: the visitor's own choice (the toggle stores it)
// wins over the page's default and over prefers-color-scheme. Loaded without defer, in <head>.
(function () {
  "use strict";
  try {
    var chosen = window.localStorage.getItem("pf-theme");
    if (chosen === "light" || chosen === "dark") document.documentElement.setAttribute("data-theme", chosen);
  } catch (err) { /* storage refused (private mode): the page's default and the system's apply */ }
})();
