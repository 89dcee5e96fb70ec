// Login page: carries ?next= into the form and shows the error the server redirected with.
const params = new URLSearchParams(location.search);
const next = params.get("next");
if (next && next.startsWith("/") && !next.startsWith("//")) {
  document.getElementById("next").value = next;
}
if (params.get("error")) {
  document.getElementById("login-error").hidden = false;
}
