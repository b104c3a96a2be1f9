//! The web UI in a real headless Chromium (Debian's `chromium`), driven over the DevTools protocol:
//! a real agent with `-ui`, services with passing and failing checks registered over the API, and
//! assertions on what a person sees. The tests also write the README's screenshots to
//! `docs/screenshots/` and print the services page's first paint. Addresses 127.0.90.x,
//! 127.0.140.20 for the ACL pages and 127.0.160.10 for intentions and config entries.

use crate::harness::{json, text, wait_for, TestAgent};
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use futures::StreamExt;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 640;

/// The Chromium to drive: `$CHROME`, else the first browser on `PATH`. Missing is a failure with
/// the fix in the message: CI must not pass these tests by skipping them.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROME") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "CHROME={} is not a file: point it at a Chromium binary", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the web UI tests need a headless Chromium and found none on PATH: install Debian's package with \
         `sudo apt-get install chromium` (scripts/setup.sh, run by scripts/test.sh, does this), or set \
         CHROME=/path/to/chromium"
    );
}

/// One browser per test, with its own profile so tests can run in parallel.
struct Ui {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Ui {
    async fn launch() -> Ui {
        let profile = tempfile::tempdir().expect("profile dir");
        let config = BrowserConfig::builder()
            .chrome_executable(chromium())
            .user_data_dir(profile.path())
            .no_sandbox() // tests run as root in CI
            .window_size(WIDTH, HEIGHT)
            .viewport(Viewport { width: WIDTH, height: HEIGHT, ..Viewport::default() })
            .args(["--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--font-render-hinting=none"])
            .launch_timeout(DEADLINE)
            .build()
            .expect("browser config");
        let (browser, mut events) = Browser::launch(config).await.expect("launch chromium");
        // The protocol's event stream must be driven; messages newer than the crate's protocol
        // come back as errors, which do not stop the browser.
        let handler = tokio::spawn(async move { while events.next().await.is_some() {} });
        Ui { browser, handler, _profile: profile }
    }

    async fn open(&self, url: &str) -> Page {
        let page = self.browser.new_page(url).await.expect("open page");
        page.wait_for_navigation().await.expect("page loaded");
        page
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

/// Evaluates `js` in the page.
async fn eval(page: &Page, js: &str) -> Value {
    page.evaluate(js).await.unwrap_or_else(|e| panic!("evaluate {js}: {e}")).into_value().unwrap_or(Value::Null)
}

/// Waits until `js` yields something other than null, false or "" (then returns it).
async fn until(page: &Page, what: &str, js: &str) -> Value {
    wait_for(DEADLINE, what, || async {
        let v = page.evaluate(js).await.ok()?.into_value::<Value>().ok()?;
        match v {
            Value::Null | Value::Bool(false) => None,
            Value::String(ref s) if s.is_empty() => None,
            v => Some(v),
        }
    })
    .await
}

/// The visible text of the first element matching `selector` ("" while there is none).
fn text_of(selector: &str) -> String {
    format!("(document.querySelector({selector:?}) || {{innerText: ''}}).innerText")
}

async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("no element {selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

/// Replaces a field's text by typing, as a person would after selecting all of it.
async fn type_into(page: &Page, selector: &str, text: &str) {
    eval(
        page,
        &format!("(() => {{ const e = document.querySelector({selector:?}); e.focus(); e.select(); return true }})()"),
    )
    .await;
    let el = page.find_element(selector).await.unwrap_or_else(|e| panic!("no element {selector}: {e}"));
    el.press_key("Delete").await.expect("clear");
    el.type_str(text).await.unwrap_or_else(|e| panic!("type into {selector}: {e}"));
}

async fn screenshot(page: &Page, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    // Let the last render settle into a frame before capturing it.
    eval(page, "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))").await;
    page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), dir.join(name))
        .await
        .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
}

async fn register(a: &TestAgent, body: Value) {
    let r = a.put("/v1/agent/service/register", &body.to_string()).await;
    assert_eq!(r.status, 200, "register {body}: {}", text(&r));
}

async fn set_check(a: &TestAgent, status: &str, id: &str, note: &str) {
    let r = a.put(&format!("/v1/agent/check/{status}/{id}?note={}", note.replace(' ', "+")), "").await;
    assert_eq!(r.status, 200, "{status} {id}: {}", text(&r));
}

/// The number of requests the page has made to URLs containing `part`.
async fn requests_to(page: &Page, part: &str) -> u64 {
    eval(page, &format!("performance.getEntriesByType('resource').filter(e => e.name.includes({part:?})).length"))
        .await
        .as_u64()
        .unwrap_or(0)
}

/// Prints the services page's first contentful paint, DOMContentLoaded and the time its table was
/// filled from the API, in ms since navigation start; returns the first contentful paint.
async fn print_paint(page: &Page, when: &str) -> Option<f64> {
    until(page, "services table", "performance.getEntriesByName('ui:services-rendered').length > 0").await;
    let ms = |v: &Value| v.as_f64().map_or("n/a".into(), |v| format!("{v:.1}"));
    let fcp = eval(page, "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null").await;
    let dcl = eval(page, "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd").await;
    let rendered = eval(page, "performance.getEntriesByName('ui:services-rendered')[0].startTime").await;
    println!(
        "ui: services page on loopback ({when}): first-contentful-paint {} ms, DOMContentLoaded {} ms, table filled {} ms",
        ms(&fcp),
        ms(&dcl),
        ms(&rendered)
    );
    fcp.as_f64()
}

#[tokio::test]
async fn services_service_nodes_and_node_pages_show_health_and_follow_it_live() {
    let a = TestAgent::start("127.0.90.1", true, &["-ui"]);
    a.ready().await;
    let node = "node-127-0-90-1";
    let ttl = |id: &str, name: &str| serde_json::json!({"CheckID": id, "Name": name, "TTL": "10m"});
    register(&a, serde_json::json!({"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1", "primary"], "Check": ttl("web-1-http", "HTTP on 8080")})).await;
    register(&a, serde_json::json!({"Name": "web", "ID": "web-2", "Port": 8081, "Tags": ["v1"], "Check": ttl("web-2-http", "HTTP on 8081")})).await;
    register(
        &a,
        serde_json::json!({"Name": "db", "ID": "db", "Port": 5432, "Check": ttl("db-lag", "Replication lag")}),
    )
    .await;
    register(&a, serde_json::json!({"Name": "api", "ID": "api", "Port": 9000, "Check": ttl("api-up", "API up")})).await;
    set_check(&a, "pass", "web-1-http", "HTTP GET http://127.0.90.1:8080/health: 200 OK").await;
    set_check(&a, "fail", "web-2-http", "dial tcp 127.0.90.1:8081: connection refused").await;
    set_check(&a, "warn", "db-lag", "replica is 12 s behind").await;
    set_check(&a, "pass", "api-up", "ok").await;
    wait_for(DEADLINE, "checks in the catalog", || async {
        let v = json(&a.get("/v1/health/state/any").await);
        let status = |id: &str| v.as_array()?.iter().find(|c| c["CheckID"] == id).map(|c| c["Status"].clone());
        (status("web-2-http")? == "critical" && status("db-lag")? == "warning" && status("api-up")? == "passing")
            .then_some(())
    })
    .await;

    let ui = Ui::launch().await;
    // First paint, printed, not asserted: once in a browser that has just started, once in a new
    // tab of a running browser (what a person opening the UI sees).
    let cold = ui.open("http://127.0.90.1:8500/ui/").await;
    print_paint(&cold, "cold browser").await;
    cold.close().await.expect("close tab");
    let mut paints = Vec::new();
    for i in 1..=5 {
        let tab = ui.open("http://127.0.90.1:8500/ui/").await;
        paints.extend(print_paint(&tab, &format!("new tab {i}")).await);
        tab.close().await.expect("close tab");
    }
    paints.sort_by(f64::total_cmp);
    if let Some(median) = paints.get(paints.len() / 2) {
        println!("ui: services page first-contentful-paint, median of {} new tabs: {median:.1} ms", paints.len());
    }
    let page = ui.open("http://127.0.90.1:8500/ui/").await;

    // Services: counts and health at a glance, as the API reports them.
    until(&page, "services table", "document.querySelector('tr[data-row=api]')").await;
    eval(
        &page,
        "window.__csp = []; document.addEventListener('securitypolicyviolation', e => __csp.push(e.violatedDirective + ' ' + e.blockedURI)); true",
    )
    .await;
    let row = |name: &str, col: &str| text_of(&format!("tr[data-row={name}] td[data-col={col}]"));
    assert_eq!(eval(&page, &row("web", "instances")).await, "2");
    assert_eq!(eval(&page, &row("web", "critical")).await, "1");
    assert_eq!(eval(&page, &row("web", "health")).await, "✕ critical");
    assert_eq!(eval(&page, &row("db", "health")).await, "! warning");
    assert_eq!(eval(&page, &row("db", "warning")).await, "1");
    assert_eq!(eval(&page, &row("api", "health")).await, "✓ passing");
    assert_eq!(eval(&page, &row("api", "critical")).await, "0");
    // Each count on the page is the agent's own count for that service.
    for s in json(&a.get("/v1/internal/ui/services").await).as_array().expect("services") {
        let name = s["Name"].as_str().expect("name");
        for (col, field) in [("passing", "ChecksPassing"), ("warning", "ChecksWarning"), ("critical", "ChecksCritical")]
        {
            assert_eq!(eval(&page, &row(name, col)).await, s[field].to_string(), "{name} {col}");
        }
    }
    assert!(eval(&page, &text_of("#summary")).await.as_str().unwrap_or("").contains("4 services, 1 with critical"));
    // The first Tab reaches the skip link, and Enter on it lands in the content, on the same page.
    let body = page.find_element("body").await.expect("body");
    body.press_key("Tab").await.expect("tab");
    until(&page, "skip link focused", "document.activeElement.id === 'skip'").await;
    body.press_key("Enter").await.expect("enter");
    until(&page, "content focused", "document.activeElement.id === 'main'").await;
    assert_eq!(eval(&page, "location.hash").await, "", "the skip link changed the route");
    screenshot(&page, "services.png").await;

    // The filter narrows the list as one types.
    type_into(&page, "input[type=search]", "prim").await;
    until(&page, "filtered to web", "document.querySelectorAll('table.services tbody tr').length === 1 && !!document.querySelector('tr[data-row=web]')").await;
    type_into(&page, "input[type=search]", "").await;

    // A real link: focus it and press Enter, as a keyboard user would.
    eval(&page, "window.__sameDocument = true").await;
    let link = page.find_element("tr[data-row=web] a").await.expect("web link");
    link.focus().await.expect("focus");
    link.press_key("Enter").await.expect("enter");
    until(&page, "service page", &format!("location.hash === '#/services/web' && {} === 'web'", text_of("h1"))).await;

    // Service: each instance with each check's status and output.
    until(&page, "two instances", "document.querySelectorAll('.instance').length === 2").await;
    let card = |id: &str| text_of(&format!("[data-instance={id}]"));
    let web1 = eval(&page, &card("web-1")).await.as_str().unwrap_or("").to_string();
    assert!(web1.contains("passing") && web1.contains("200 OK") && web1.contains("HTTP on 8080"), "{web1}");
    assert!(web1.contains("Serf Health Status") && web1.contains(node), "{web1}");
    let web2 = eval(&page, &card("web-2")).await.as_str().unwrap_or("").to_string();
    assert!(web2.contains("critical") && web2.contains("connection refused"), "{web2}");
    assert_eq!(eval(&page, &text_of("[data-instance=web-2] h3 .badge")).await, "✕ critical");
    screenshot(&page, "service.png").await;

    // Live: a check that recovers turns green on the open page, with no reload and no polling storm.
    let before = requests_to(&page, "/v1/health/service/web").await;
    set_check(&a, "pass", "web-2-http", "HTTP GET http://127.0.90.1:8081/health: 200 OK").await;
    until(
        &page,
        "web-2 passing on the open page",
        "document.querySelector('[data-instance=web-2] h3 .badge')?.dataset.status === 'passing' && document.querySelector('[data-instance=web-2]').innerText.includes('8081/health: 200 OK')",
    )
    .await;
    assert_eq!(eval(&page, "window.__sameDocument === true").await, true, "the page reloaded");
    let after = requests_to(&page, "/v1/health/service/web").await;
    assert!(after - before <= 3, "{} requests for one change: the page polls instead of blocking", after - before);
    assert!(before <= 3, "{before} requests before any change");

    // Nodes: the nav link, serfHealth, counts.
    click(&page, "nav a[data-nav=nodes]").await;
    until(&page, "nodes table", &format!("document.querySelector('tr[data-row={node}]')")).await;
    assert_eq!(eval(&page, "document.querySelector('nav a[aria-current=page]').dataset.nav").await, "nodes");
    assert_eq!(eval(&page, &row(node, "serf")).await, "✓ passing");
    assert_eq!(eval(&page, &row(node, "services")).await, "5");
    assert_eq!(eval(&page, &row(node, "address")).await, "127.0.90.1");
    screenshot(&page, "nodes.png").await;

    // Node: its services and checks with outputs.
    click(&page, &format!("tr[data-row={node}] a")).await;
    until(&page, "node page", "document.querySelectorAll('table.checks tbody tr').length === 5").await;
    let body = eval(&page, "document.querySelector('main').innerText").await.as_str().unwrap_or("").to_string();
    for want in ["web-1", "web-2", "db", "api", "consul", "replica is 12 s behind", "Agent alive and reachable"] {
        assert!(body.contains(want), "node page lacks {want:?}: {body}");
    }
    assert_eq!(eval(&page, &text_of("tr[data-row=db] td[data-col=health]")).await, "! warning");

    // The services list follows a failure live too.
    click(&page, "nav a[data-nav=services]").await;
    until(&page, "services again", "document.querySelector('tr[data-row=api]')").await;
    set_check(&a, "fail", "api-up", "process exited").await;
    until(&page, "api critical live", &format!("{} === '✕ critical'", row("api", "health"))).await;

    // A narrow window: tables become stacked cards, nothing runs off the side.
    page.execute(
        SetDeviceMetricsOverrideParams::builder()
            .width(380)
            .height(800)
            .device_scale_factor(1.0)
            .mobile(true)
            .build()
            .expect("metrics"),
    )
    .await
    .expect("narrow viewport");
    until(
        &page,
        "narrow layout",
        "getComputedStyle(document.querySelector('table.services thead')).display === 'none'",
    )
    .await;
    let overflow = eval(&page, "document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
    assert!(overflow.as_i64().unwrap_or(1) <= 0, "the narrow page scrolls sideways by {overflow} px");
    screenshot(&page, "services-narrow.png").await;
    assert_eq!(
        eval(&page, "window.__csp").await,
        serde_json::json!([]),
        "the page broke its own Content-Security-Policy"
    );

    ui.close().await;
}

#[tokio::test]
async fn kv_folders_edit_create_delete_and_a_cas_conflict_through_the_page() {
    let a = TestAgent::start("127.0.90.2", true, &["-ui"]);
    a.ready().await;
    a.put("/v1/kv/app/config", "max_conns = 100").await;
    a.put("/v1/kv/app/db/url", "postgres://db.service.consul/app").await;
    a.put("/v1/kv/app/db/pool", "16").await;
    a.put("/v1/kv/app/feature-flags", r#"{"new_ui": true}"#).await;
    a.put("/v1/kv/top-level", "x").await;
    let raw = |key: &'static str| {
        let a = &a;
        async move {
            let r = a.get(&format!("/v1/kv/{key}?raw")).await;
            (r.status == 200).then(|| text(&r))
        }
    };

    let ui = Ui::launch().await;
    let page = ui.open("http://127.0.90.2:8500/ui/#/kv/").await;
    until(
        &page,
        "root listing",
        "document.querySelector('[data-key-row=\"app/\"]') && document.querySelector('[data-key-row=\"top-level\"]')",
    )
    .await;
    assert!(eval(&page, &text_of("[data-key-row=\"app/\"]")).await.as_str().unwrap_or("").contains("folder"));

    // Into the folder, as a tree.
    click(&page, "[data-key-row=\"app/\"] a").await;
    until(&page, "app/ listing", "document.querySelector('[data-key-row=\"app/db/\"]') && document.querySelector('[data-key-row=\"app/config\"]')").await;
    assert_eq!(eval(&page, "location.hash").await, "#/kv/app/");
    screenshot(&page, "kv.png").await;

    // A key appears in the open folder when someone else writes it.
    a.put("/v1/kv/app/added-live", "1").await;
    until(&page, "live key", "document.querySelector('[data-key-row=\"app/added-live\"]')").await;

    // View and edit a key; read it back over the API.
    click(&page, "[data-key-row=\"app/config\"] a").await;
    until(&page, "key page", &format!("{} === 'max_conns = 100'", text_of("#kv-current"))).await;
    assert_eq!(eval(&page, "document.querySelector('#kv-value').value").await, "max_conns = 100");
    type_into(&page, "#kv-value", "max_conns = 250").await;
    // By keyboard: Enter on the focused Save button.
    let save = page.find_element("#kv-edit button[type=submit]").await.expect("save button");
    save.focus().await.expect("focus save");
    save.press_key("Enter").await.expect("enter");
    until(&page, "saved", &format!("{}.startsWith('Saved')", text_of("#kv-msg"))).await;
    assert_eq!(raw("app/config").await.as_deref(), Some("max_conns = 250"));
    until(&page, "new value shown", &format!("{} === 'max_conns = 250'", text_of("#kv-current"))).await;
    assert_eq!(
        eval(&page, "document.activeElement === document.querySelector('#kv-edit button[type=submit]')").await,
        true,
        "the live update took the keyboard focus away"
    );
    screenshot(&page, "kv-key.png").await;

    // Someone else writes while this page holds an edit: the save is refused and says why.
    type_into(&page, "#kv-value", "max_conns = 500").await;
    a.put("/v1/kv/app/config", "max_conns = 300").await;
    until(&page, "warned of the other write", &format!("{} === 'max_conns = 300'", text_of("#kv-current"))).await;
    click(&page, "#kv-edit button[type=submit]").await;
    let conflict =
        until(&page, "conflict shown", &format!("{0}.startsWith('Conflict') && {0}", text_of("#kv-msg"))).await;
    assert!(conflict.as_str().unwrap_or("").contains("Someone else changed app/config"), "{conflict}");
    assert_eq!(raw("app/config").await.as_deref(), Some("max_conns = 300"), "the conflicting save went through");
    assert_eq!(eval(&page, "document.querySelector('#kv-value').value").await, "max_conns = 500", "the edit was lost");
    screenshot(&page, "kv-conflict.png").await;
    // Choosing to overwrite writes this page's text.
    click(&page, "#kv-msg button.danger").await;
    until(&page, "overwritten", &format!("{}.startsWith('Saved')", text_of("#kv-msg"))).await;
    assert_eq!(raw("app/config").await.as_deref(), Some("max_conns = 500"));

    // Create a key in a folder; creating it again is refused rather than overwriting.
    page.evaluate("location.hash = '#/kv/app/db/'").await.expect("go to folder");
    until(&page, "db folder", "document.querySelector('[data-key-row=\"app/db/pool\"]')").await;
    type_into(&page, "#kv-new-key", "timeout").await;
    type_into(&page, "#kv-new-value", "5s").await;
    click(&page, "#kv-create button[type=submit]").await;
    until(&page, "created key page", "location.hash === '#/kv/app/db/timeout'").await;
    wait_for(DEADLINE, "created over the API", || async { (raw("app/db/timeout").await? == "5s").then_some(()) }).await;
    page.evaluate("location.hash = '#/kv/app/db/'").await.expect("back to folder");
    until(&page, "db folder again", "document.querySelector('[data-key-row=\"app/db/timeout\"]')").await;
    type_into(&page, "#kv-new-key", "pool").await;
    type_into(&page, "#kv-new-value", "99").await;
    click(&page, "#kv-create button[type=submit]").await;
    until(&page, "exists message", &format!("{}.includes('already exists')", text_of("#kv-msg"))).await;
    assert_eq!(raw("app/db/pool").await.as_deref(), Some("16"));

    // Delete asks once more, then removes the key and returns to its folder.
    page.evaluate("location.hash = '#/kv/app/db/pool'").await.expect("go to key");
    until(&page, "pool page", &format!("{} === '16'", text_of("#kv-current"))).await;
    click(&page, "#kv-edit button.danger").await;
    click(&page, "#kv-edit button.danger").await; // "Yes, delete"
    until(&page, "back in folder", "location.hash === '#/kv/app/db/'").await;
    assert_eq!(raw("app/db/pool").await, None);
    until(&page, "pool gone from list", "!document.querySelector('[data-key-row=\"app/db/pool\"]') && !!document.querySelector('[data-key-row=\"app/db/url\"]')").await;

    // A folder is a key ending in "/": create one at the root, then delete a folder recursively.
    page.evaluate("location.hash = '#/kv/'").await.expect("go to root");
    until(&page, "root again", "document.querySelector('[data-key-row=\"top-level\"]')").await;
    type_into(&page, "#kv-new-key", "releases/").await;
    click(&page, "#kv-create button[type=submit]").await;
    until(
        &page,
        "empty new folder",
        &format!("location.hash === '#/kv/releases/' && {}.includes('empty')", text_of("#kv-list")),
    )
    .await;
    assert_eq!(a.get("/v1/kv/releases/").await.status, 200, "folder key created");
    page.evaluate("location.hash = '#/kv/app/db/'").await.expect("go to folder");
    until(&page, "db folder to delete", "document.querySelector('[data-key-row=\"app/db/url\"]')").await;
    click(&page, "#main > .tools button.danger").await;
    click(&page, "#main > .tools button.danger").await; // "Yes, delete folder"
    until(
        &page,
        "back in app/",
        "location.hash === '#/kv/app/' && !!document.querySelector('[data-key-row=\"app/config\"]')",
    )
    .await;
    assert_eq!(a.get("/v1/kv/app/db/?recurse").await.status, 404, "app/db/ deleted with its keys");
    assert_eq!(raw("app/config").await.as_deref(), Some("max_conns = 500"), "siblings kept");

    ui.close().await;
}

/// A plain TCP forwarder on 127.0.90.4 to `to`, standing in for a reverse proxy: the page must
/// work from another host and port, since it names only paths (`/ui/app.js`, `/v1/...`).
async fn proxy(to: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.90.4:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn servers_page_marks_the_leader_and_members_page_lists_the_agent() {
    let mut a = TestAgent::start("127.0.90.3", true, &["-ui"]);
    a.ready().await;
    let node = "node-127-0-90-3";
    let ui = Ui::launch().await;
    let base = proxy("127.0.90.3:8500").await;
    let page = ui.open(&format!("{base}/ui/#/servers")).await;
    until(&page, "servers table", "document.querySelector('table.servers tbody tr')").await;
    let config = json(&a.get("/v1/operator/raft/configuration").await);
    let servers = config["Servers"].as_array().expect("servers");
    assert_eq!(eval(&page, "document.querySelectorAll('table.servers tbody tr').length").await, servers.len() as u64);
    let leader = servers.iter().find(|s| s["Leader"] == true).expect("a leader");
    let id = leader["ID"].as_str().expect("id");
    let cell = |col: &str| text_of(&format!("tr[data-row=\"{id}\"] td[data-col={col}]"));
    assert!(eval(&page, &cell("name")).await.as_str().unwrap_or("").contains("★ leader"));
    assert_eq!(eval(&page, &cell("state")).await, "leader");
    assert_eq!(eval(&page, &cell("address")).await, "127.0.90.3:8300");
    assert_eq!(eval(&page, &cell("voter")).await, "yes");
    until(&page, "autopilot health", &format!("{} === '✓ passing'", cell("health"))).await;
    assert!(eval(&page, &text_of("#leader")).await.as_str().unwrap_or("").contains(node));
    screenshot(&page, "servers.png").await;

    click(&page, "nav a[data-nav=members]").await;
    until(&page, "members table", &format!("document.querySelector('tr[data-row={node}]')")).await;
    let m = |col: &str| text_of(&format!("tr[data-row={node}] td[data-col={col}]"));
    assert_eq!(eval(&page, &m("status")).await, "alive");
    assert_eq!(eval(&page, &m("type")).await, "server");
    assert_eq!(eval(&page, &m("address")).await, "127.0.90.3:8301");

    // The agent goes away: the page says it is not live and keeps retrying, with backoff.
    assert_eq!(eval(&page, "document.getElementById('live').className").await, "ok");
    a.kill9();
    until(&page, "not-live notice", "document.getElementById('live').className === 'err' && document.getElementById('live').innerText.includes('retrying')").await;
    ui.close().await;
}

/// The value of a localStorage key in the page (null when absent).
async fn stored(page: &Page, key: &str) -> Value {
    eval(page, &format!("localStorage.getItem({key:?})")).await
}

#[tokio::test]
async fn acl_login_shows_only_what_the_token_may_see_and_management_edits_acls() {
    use crate::acl_cli::{acl_agent, MGMT};
    let a = acl_agent("127.0.140.20", Some(MGMT), &["-ui"]);
    a.ready().await;
    for (name, port) in [("web", 8080), ("db", 5432)] {
        register(&a, serde_json::json!({"Name": name, "ID": name, "Port": port})).await;
    }
    for (key, value) in [("app/config", "max_conns = 100"), ("secret/root-password", "hunter2")] {
        assert_eq!(a.put(&format!("/v1/kv/{key}"), value).await.status, 200);
    }
    let rules = "service \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }\nkey_prefix \"app/\" { policy = \"read\" }";
    let r = a.put("/v1/acl/policy", &serde_json::json!({"Name": "web-reader", "Rules": rules}).to_string()).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = a
        .put(
            "/v1/acl/token",
            &serde_json::json!({"Description": "web reader", "Policies": [{"Name": "web-reader"}]}).to_string(),
        )
        .await;
    let token = json(&r);
    let (accessor, secret) =
        (token["AccessorID"].as_str().expect("accessor"), token["SecretID"].as_str().expect("secret"));
    wait_for(DEADLINE, "web and db in the catalog", || async {
        let v = json(&a.get("/v1/catalog/services").await);
        (v.get("web").is_some() && v.get("db").is_some()).then_some(())
    })
    .await;

    let ui = Ui::launch().await;
    let page = ui.open("http://127.0.140.20:8500/ui/").await;
    eval(
        &page,
        "window.__csp = []; document.addEventListener('securitypolicyviolation', e => __csp.push(e.violatedDirective + ' ' + e.blockedURI)); true",
    )
    .await;
    // It says what it is.
    assert!(eval(&page, "document.title").await.as_str().unwrap_or("").contains("Consul-compatible"));
    assert!(eval(&page, &text_of("#about")).await.as_str().unwrap_or("").contains("not HashiCorp Consul"));

    // No token: the list is filtered down to nothing, and the page says so.
    until(
        &page,
        "filtered services",
        &format!("{}.includes('This token may not see any services')", text_of("#filtered")),
    )
    .await;
    until(
        &page,
        "ACL nav and login link",
        "!document.querySelector('[data-acl]').hidden && !!document.querySelector('#login-link')",
    )
    .await;
    // A page that needs a permission the anonymous token lacks: the 403 page, in the agent's words.
    page.evaluate("location.hash = '#/servers'").await.expect("go to servers");
    until(&page, "403 page", &format!("{} === 'This token may not see the Raft servers.'", text_of("#denied-what")))
        .await;
    let said = eval(&page, &text_of("#denied-text")).await;
    assert!(
        said.as_str().unwrap_or("").starts_with("Permission denied: anonymous token lacks permission 'operator:read'"),
        "{said}"
    );
    assert_eq!(eval(&page, &text_of("h1")).await, "Permission denied");
    screenshot(&page, "acl-denied.png").await;

    // Log in: a token the agent does not know is refused, a real one is kept and used.
    click(&page, "#denied-login").await;
    until(&page, "login page", "location.hash === '#/login' && !!document.querySelector('#login-token')").await;
    assert_eq!(eval(&page, &text_of("#login-form h2")).await, "Log in with a token");
    type_into(&page, "#login-token", "0a0a0a0a-0000-4000-8000-000000000000").await;
    click(&page, "#login-submit").await;
    until(&page, "refused", &format!("{}.includes('ACL not found')", text_of("#login-msg"))).await;
    assert_eq!(stored(&page, "agent-ui:token").await, Value::Null);
    screenshot(&page, "acl-login.png").await;
    type_into(&page, "#login-token", secret).await;
    click(&page, "#login-submit").await;
    until(&page, "logged in", &format!("{} === 'web reader'", text_of("#who"))).await;
    let kept = stored(&page, "agent-ui:token").await;
    let kept: Value = serde_json::from_str(kept.as_str().unwrap_or("null")).expect("stored token");
    assert_eq!((kept["SecretID"].as_str(), kept["AccessorID"].as_str()), (Some(secret), Some(accessor)));
    // Back on the page it came from, which this token may not see either, now named.
    until(
        &page,
        "403 again, for this token",
        &format!("location.hash === '#/servers' && {}.includes({accessor:?})", text_of("#denied-text")),
    )
    .await;

    // Only the services and keys the token may read.
    page.evaluate("location.hash = '#/services'").await.expect("services");
    until(&page, "web listed", "!!document.querySelector('tr[data-row=web]')").await;
    assert_eq!(
        eval(&page, "!!document.querySelector('tr[data-row=db]') || !!document.querySelector('tr[data-row=consul]')")
            .await,
        false
    );
    assert!(eval(&page, &text_of("#filtered")).await.as_str().unwrap_or("").contains("Some services are hidden"));
    page.evaluate("location.hash = '#/kv/'").await.expect("kv");
    until(&page, "app/ listed", "!!document.querySelector('[data-key-row=\"app/\"]')").await;
    assert_eq!(eval(&page, "!!document.querySelector('[data-key-row=\"secret/\"]')").await, false);
    page.evaluate("location.hash = '#/kv/secret/root-password'").await.expect("secret key");
    until(
        &page,
        "a key it may not read",
        &format!("{} === 'This token may not see key secret/root-password.'", text_of("#denied-what")),
    )
    .await;

    // Log out: the token is gone from the browser and from the requests.
    click(&page, "#logout").await;
    until(&page, "logged out", "!!document.querySelector('#login-link')").await;
    assert_eq!(stored(&page, "agent-ui:token").await, Value::Null);
    page.evaluate("location.hash = '#/services'").await.expect("services");
    until(&page, "nothing visible again", &format!("{}.includes('may not see any services')", text_of("#filtered")))
        .await;

    // The management token: tokens and policies.
    page.evaluate("location.hash = '#/login'").await.expect("login");
    until(&page, "login page", "!!document.querySelector('#login-token')").await;
    type_into(&page, "#login-token", MGMT).await;
    click(&page, "#login-submit").await;
    until(&page, "logged in as management", &format!("{} === 'Initial Management Token'", text_of("#who"))).await;
    click(&page, "nav a[data-nav=acl-tokens]").await;
    until(&page, "tokens listed", &format!("!!document.querySelector('tr[data-row=\"{accessor}\"]')")).await;
    let row = eval(&page, &text_of(&format!("tr[data-row=\"{accessor}\"]"))).await;
    assert!(
        row.as_str().unwrap_or("").contains("web reader") && row.as_str().unwrap_or("").contains("web-reader"),
        "{row}"
    );
    assert!(eval(&page, "document.querySelectorAll('table.tokens tbody tr').length").await.as_u64().unwrap_or(0) >= 3);
    screenshot(&page, "acl-tokens.png").await;

    // Create a policy through the page, then edit it.
    click(&page, "nav a[data-nav=acl-policies]").await;
    until(&page, "policies listed", "!!document.querySelector('tr[data-row=\"web-reader\"]')").await;
    type_into(&page, "#policy-new-name", "ops-read").await;
    type_into(&page, "#policy-new-description", "operators read").await;
    type_into(&page, "#policy-new-rules", "operator = \"read\"").await;
    click(&page, "#policy-create button[type=submit]").await;
    until(
        &page,
        "the new policy's page",
        &format!("location.hash.startsWith('#/acl/policies/') && {} === 'ops-read'", text_of("h1")),
    )
    .await;
    let p = json(&a.get("/v1/acl/policy/name/ops-read").await);
    assert_eq!((p["Rules"].as_str(), p["Description"].as_str()), (Some("operator = \"read\""), Some("operators read")));
    type_into(&page, "#policy-description", "operators may read Raft").await;
    click(&page, "#policy-save").await;
    until(&page, "policy saved", &format!("{} === 'Saved.'", text_of("#policy-msg"))).await;
    assert_eq!(json(&a.get("/v1/acl/policy/name/ops-read").await)["Description"], "operators may read Raft");
    screenshot(&page, "acl-policy.png").await;

    // Edit the web reader: a new description and the new policy, through its page.
    page.evaluate(format!("location.hash = '#/acl/tokens/{accessor}'").as_str()).await.expect("token page");
    until(
        &page,
        "its policy ticked",
        "document.querySelector('#token-policies input[data-policy=\"web-reader\"]')?.checked === true",
    )
    .await;
    click(&page, "#token-policies input[data-policy=\"ops-read\"]").await;
    type_into(&page, "#token-description", "web and Raft reader").await;
    click(&page, "#token-save").await;
    until(&page, "token saved", &format!("{} === 'Saved.'", text_of("#token-msg"))).await;
    let t = json(&a.get(&format!("/v1/acl/token/{accessor}")).await);
    assert_eq!(t["Description"], "web and Raft reader");
    let names: Vec<&str> =
        t["Policies"].as_array().expect("policies").iter().filter_map(|l| l["Name"].as_str()).collect();
    assert_eq!(names, ["web-reader", "ops-read"]);
    until(&page, "the page follows", &format!("{}.includes('ops-read')", text_of("#token-current-policies"))).await;

    // Create a token through the page, then delete it there.
    click(&page, "nav a[data-nav=acl-tokens]").await;
    until(&page, "create form", "!!document.querySelector('#token-new-policies input[data-policy=\"ops-read\"]')")
        .await;
    type_into(&page, "#token-new-description", "made in the page").await;
    click(&page, "#token-new-policies input[data-policy=\"ops-read\"]").await;
    click(&page, "#token-create button[type=submit]").await;
    let new_id = until(
        &page,
        "the new token's page",
        "location.hash.startsWith('#/acl/tokens/') && location.hash.slice('#/acl/tokens/'.length)",
    )
    .await;
    let new_id = new_id.as_str().expect("accessor").to_string();
    let t = json(&a.get(&format!("/v1/acl/token/{new_id}")).await);
    assert_eq!(
        (t["Description"].as_str(), t["Policies"][0]["Name"].as_str()),
        (Some("made in the page"), Some("ops-read"))
    );
    until(&page, "its page", &format!("{} === 'made in the page'", text_of("#token-current-description"))).await;
    click(&page, "#token-edit button.danger").await;
    click(&page, "#token-edit button.danger").await; // "Yes, delete token"
    until(&page, "back to the list", "location.hash === '#/acl/tokens'").await;
    assert_eq!(a.get(&format!("/v1/acl/token/{new_id}")).await.status, 403, "deleted: ACL not found");

    assert_eq!(
        eval(&page, "window.__csp").await,
        serde_json::json!([]),
        "the page broke its own Content-Security-Policy"
    );
    ui.close().await;
}

#[tokio::test]
async fn intentions_created_edited_and_deleted_in_the_page_and_config_entries_read() {
    let a = TestAgent::start("127.0.160.10", true, &["-ui"]);
    a.ready().await;
    let r = a.put("/v1/config", r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}"#).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = a
        .put(
            "/v1/connect/intentions/exact?source=*&destination=db",
            r#"{"Action": "deny", "Description": "nothing else"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let exact = |s: &'static str, d: &'static str| {
        let a = &a;
        async move {
            let r = a.get(&format!("/v1/connect/intentions/exact?source={s}&destination={d}")).await;
            (r.status == 200).then(|| json(&r))
        }
    };

    let ui = Ui::launch().await;
    let page = ui.open("http://127.0.160.10:8500/ui/#/intentions").await;
    eval(
        &page,
        "window.__csp = []; document.addEventListener('securitypolicyviolation', e => __csp.push(e.violatedDirective + ' ' + e.blockedURI)); true",
    )
    .await;
    assert!(
        eval(&page, "document.body.innerText").await.as_str().unwrap_or("").contains("It is not HashiCorp Consul"),
        "the page must say it is Consul-compatible, not Consul"
    );
    until(&page, "the deny row", "document.querySelector('[data-row=\"* => db\"] [data-action=deny]')").await;

    // Create web => db (allow); it lists above the wildcard, by precedence.
    type_into(&page, "#intention-new-source", "web").await;
    type_into(&page, "#intention-new-destination", "db").await;
    type_into(&page, "#intention-new-description", "web reads db").await;
    click(&page, "#intention-create button[type=submit]").await;
    until(&page, "the new intention's page", "location.hash === '#/intentions/web/db'").await;
    let i = exact("web", "db").await.expect("created over the API");
    assert_eq!((i["Action"].as_str(), i["Description"].as_str()), (Some("allow"), Some("web reads db")));
    until(&page, "its page", &format!("{} === 'web reads db'", text_of("#intention-current-description"))).await;

    // Edit: deny it.
    click(&page, "#intention-action input[value=deny]").await;
    click(&page, "#intention-save").await;
    until(&page, "saved", &format!("{}.startsWith('Saved')", text_of("#intention-msg"))).await;
    assert_eq!(exact("web", "db").await.expect("still there")["Action"], "deny");
    until(&page, "shown as deny", "!!document.querySelector('#intention-current-action [data-action=deny]')").await;

    // The list, most precise first; creating the same pair again is refused.
    click(&page, "nav a[data-nav=intentions]").await;
    until(&page, "two rows", "document.querySelectorAll('table.intentions tbody tr').length === 2").await;
    assert_eq!(
        eval(&page, "[...document.querySelectorAll('table.intentions tbody tr')].map(r => r.dataset.row)").await,
        serde_json::json!(["web => db", "* => db"])
    );
    screenshot(&page, "intentions.png").await;
    type_into(&page, "#intention-new-source", "web").await;
    type_into(&page, "#intention-new-destination", "db").await;
    click(&page, "#intention-create button[type=submit]").await;
    until(&page, "exists message", &format!("{}.includes('already exists')", text_of("#intention-msg"))).await;
    assert_eq!(exact("web", "db").await.expect("kept")["Action"], "deny", "the existing intention was overwritten");

    // Delete asks once more.
    page.evaluate("location.hash = '#/intentions/web/db'").await.expect("go to intention");
    until(&page, "its page again", "!!document.querySelector('#intention-current-action [data-action=deny]')").await;
    click(&page, "#intention-edit button.danger").await;
    click(&page, "#intention-edit button.danger").await; // "Yes, delete intention"
    until(&page, "back to the list", "location.hash === '#/intentions'").await;
    assert_eq!(exact("web", "db").await, None);
    until(&page, "one row", "document.querySelectorAll('table.intentions tbody tr').length === 1").await;

    // Config entries: by kind, then one entry as JSON; a write elsewhere shows up live.
    click(&page, "nav a[data-nav=config]").await;
    until(&page, "service-defaults/web", "!!document.querySelector('[data-row=web] a')").await;
    assert_eq!(eval(&page, &text_of("[data-row=web] [data-col=protocol]")).await, "http");
    let r = a.put("/v1/config", r#"{"Kind": "service-defaults", "Name": "api", "Protocol": "grpc"}"#).await;
    assert_eq!(r.status, 200);
    until(&page, "api live", "!!document.querySelector('[data-row=api]')").await;
    screenshot(&page, "config.png").await;
    click(&page, "[data-row=web] a").await;
    let shown = until(&page, "the entry's JSON", &text_of("#config-json")).await;
    let shown: Value = serde_json::from_str(shown.as_str().unwrap_or("")).expect("the page shows JSON");
    assert_eq!((shown["Kind"].as_str(), shown["Protocol"].as_str()), (Some("service-defaults"), Some("http")));
    click(&page, "#main .crumbs a[href='#/config/service-defaults']").await;
    until(&page, "kind list again", "!!document.querySelector('[data-row=api]')").await;
    click(&page, "#config-kinds a[data-kind=service-intentions]").await;
    until(&page, "the intentions entry of db", "!!document.querySelector('[data-row=db]')").await;

    // An L7 intention: its permissions are shown, and an edit of its description keeps them.
    let r = a
        .put(
            "/v1/connect/intentions/exact?source=api&destination=web",
            r#"{"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/v1/"}}]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    page.evaluate("location.hash = '#/intentions/api/web'").await.expect("go to the L7 intention");
    until(&page, "1 permission", "!!document.querySelector('#intention-current-action [data-action=l7]')").await;
    assert_eq!(eval(&page, "document.querySelector('#intention-action').hidden").await, true);
    type_into(&page, "#intention-description", "api calls /v1/").await;
    click(&page, "#intention-save").await;
    until(&page, "saved L7", &format!("{}.startsWith('Saved')", text_of("#intention-msg"))).await;
    let i = exact("api", "web").await.expect("still there");
    assert_eq!(i["Description"], "api calls /v1/");
    assert_eq!(i["Permissions"][0]["HTTP"]["PathPrefix"], "/v1/", "the edit dropped the permissions: {i}");

    assert_eq!(
        eval(&page, "window.__csp").await,
        serde_json::json!([]),
        "the page broke its own Content-Security-Policy"
    );
    ui.close().await;
}
