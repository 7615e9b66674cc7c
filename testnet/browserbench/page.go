package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// tableRows is the number of rows, each with its button, of the scenario
// page's table.
const tableRows = 300

// scenarioPage is the page both tools drive: a login form whose button
// sets a cookie and shows "Welcome" without leaving the page (so the
// table's refs stay valid), and a table of tableRows rows with a "Buy item
// N" button each that increments the counter #count. A row is the item's
// name and its button, the page on which the baseline figures were
// taken (playwright-mcp's snapshot of it: 38.7 KB).
func scenarioPage() string {
	var b strings.Builder
	b.WriteString(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<link rel="icon" href="data:,">
<style>body{font-family:sans-serif} td{padding:2px 8px}</style></head>
<body>
<h1>Shop</h1>
<form id="login" onsubmit="return login()">
  <label for="user">User</label> <input id="user" name="user" autocomplete="username">
  <label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password">
  <button type="submit">Log in</button>
</form>
<p id="welcome" hidden></p>
<p>Bought: <span id="count">0</span></p>
<table>
<tbody>
`)
	for i := 1; i <= tableRows; i++ {
		fmt.Fprintf(&b, "<tr><td>Item %d</td><td><button onclick=\"buy()\">Buy item %d</button></td></tr>\n", i, i)
	}
	b.WriteString(`</tbody></table>
<script>
function login() {
  const user = document.getElementById("user").value;
  if (!user || !document.getElementById("password").value) return false;
  document.cookie = "session=" + encodeURIComponent(user) + "; path=/";
  const w = document.getElementById("welcome");
  w.textContent = "Welcome, " + user;
  w.hidden = false;
  return false;
}
function buy() {
  const c = document.getElementById("count");
  c.textContent = String(Number(c.textContent) + 1);
}
</script>
</body></html>
`)
	return b.String()
}

// servePage serves the scenario page on a loopback port and returns its
// URL and a function that stops the server.
func servePage() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("page server: %w", err)
	}
	page := scenarioPage()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /shop", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(page))
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/shop", func() { _ = srv.Close() }, nil
}
