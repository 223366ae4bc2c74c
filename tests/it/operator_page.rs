//! The operator page under `/ui/`: served only with a token, signed in by a
//! form that sets a session cookie, its security headers, and in a real
//! headless Chromium each view against the database, a customer label shown
//! as text, and a screenshot of each view (docs/ui/ with
//! `WEBHOOKD_UPDATE_SCREENSHOTS=1`).

use std::net::SocketAddr;
use std::time::Duration;

use uuid::Uuid;
use webhookd::config::RunArgs;
use webhookd::manage::{self, CreateWebhook};
use webhookd::EventType;

use crate::harness::browser::{screenshot_dir, Browser};
use crate::harness::{http_request, sample, test_args, wait_until, Receiver, TestApp};

const TOKEN: &str = "test-admin-token-0123456789";
const SCRIPT_LABEL: &str = "billing <script>alert(1)</script>";

/// The status code of a raw HTTP response.
fn status(response: &str) -> u16 {
    response[9..12].parse().unwrap()
}

/// A header's value in a raw HTTP response.
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Signs in with the form and returns the `Cookie` header that came back.
async fn sign_in(admin: SocketAddr) -> String {
    let body = format!("token={TOKEN}");
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let response = http_request(admin, "POST", "/ui/login", form, &body).await;
    assert_eq!(status(&response), 303, "{response}");
    assert_eq!(header(&response, "location"), Some("/ui/"));
    let cookie = header(&response, "set-cookie").expect("a session cookie");
    let (pair, _) = cookie.split_once(';').unwrap();
    format!("Cookie: {pair}\r\n")
}

#[tokio::test]
async fn the_page_is_not_served_without_a_token() {
    let app = TestApp::new().await;
    let (daemon, admin) = app.spawn_daemon_with_admin(test_args(), None).await;
    for path in ["/ui/", "/ui/login", "/ui"] {
        let response = http_request(admin, "GET", path, "", "").await;
        assert_eq!(status(&response), 404, "{path}");
    }
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn signing_in_sets_a_session_cookie_and_every_answer_is_locked_down() {
    let app = TestApp::new().await;
    let (daemon, admin) = app.spawn_daemon_with_admin(test_args(), Some(TOKEN)).await;

    let anonymous = http_request(admin, "GET", "/ui/", "", "").await;
    assert_eq!(status(&anonymous), 303);
    assert_eq!(header(&anonymous, "location"), Some("/ui/login"));

    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let wrong = http_request(
        admin,
        "POST",
        "/ui/login",
        form,
        "token=wrong-token-0123456789",
    )
    .await;
    assert_eq!(status(&wrong), 401);
    assert!(wrong.contains("Wrong token."));
    assert!(header(&wrong, "set-cookie").is_none());

    let body = format!("token={TOKEN}");
    let right = http_request(admin, "POST", "/ui/login", form, &body).await;
    let cookie = header(&right, "set-cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "the admin address is plain HTTP: {cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the cookie is a session id, not the token"
    );

    let session = sign_in(admin).await;
    let page = http_request(admin, "GET", "/ui/", &session, "").await;
    assert_eq!(status(&page), 200, "{page}");
    let expected = [
        ("content-type", "text/html; charset=utf-8"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ];
    for (name, value) in expected {
        assert_eq!(header(&page, name), Some(value), "{name}");
    }
    let policy = header(&page, "content-security-policy").unwrap();
    assert!(policy.starts_with("default-src 'none'; style-src 'unsafe-inline'"));
    assert!(!page.contains("<script"), "the page runs no script");

    let logout = http_request(admin, "POST", "/ui/logout", &session, "").await;
    assert_eq!(status(&logout), 303);
    let after = http_request(admin, "GET", "/ui/", &session, "").await;
    assert_eq!(status(&after), 303, "the session ended");
    daemon.stop().await.unwrap();
}

/// Two organizations: a healthy webhook and one whose receiver answers 503
/// (labelled with markup) in the first, a healthy one in the second; some
/// events delivered, some failed for good.
struct Scene {
    healthy: Uuid,
    failing: Uuid,
}

async fn create(app: &TestApp, org: Uuid, url: &str, label: &str) -> Uuid {
    let client = app.db.client().await;
    let request = CreateWebhook {
        organization_id: org,
        url,
        label,
        allow_private_targets: true,
        signature_scheme: Default::default(),
    };
    manage::create(
        &client,
        &app.secrets,
        &webhookd::delivery::sender::SystemResolver,
        &request,
    )
    .await
    .expect("create webhook")
    .id
}

async fn deliver_some(app: &TestApp, ok: &Receiver, failing: &Receiver) -> Scene {
    let (org, other) = (Uuid::new_v4(), Uuid::new_v4());
    let healthy = create(app, org, &ok.url("/hook"), "orders").await;
    let failing = create(app, org, &failing.url("/hook"), SCRIPT_LABEL).await;
    create(app, other, &ok.url("/other"), "").await;
    for _ in 0..3 {
        app.emit(org, "post.created", sample(EventType::PostCreated))
            .await;
    }
    app.emit(other, "post.created", sample(EventType::PostCreated))
        .await;
    app.wait_for_deliveries("status = 'delivered'", 4).await;
    app.wait_for_deliveries("status = 'failed'", 3).await;
    // The webhook's status fields are folded about once a second.
    let folded = format!(
        "SELECT count(*) FROM outbox.webhooks WHERE id = '{failing}' AND last_failure_reason IS NOT NULL"
    );
    wait_until(
        "the failure reason is folded",
        Duration::from_secs(20),
        || async { app.db.count(&folded).await == 1 },
    )
    .await;
    Scene { healthy, failing }
}

#[tokio::test]
async fn an_operator_signs_in_and_reads_each_view_in_a_browser() {
    let Some(browser) = Browser::start("the operator page in a browser").await else {
        return;
    };
    let app = TestApp::new().await;
    let (ok, bad) = (
        Receiver::with_status(200).await,
        Receiver::with_status(503).await,
    );
    let args = RunArgs {
        max_retries: 1,
        ..test_args()
    };
    let (daemon, admin) = app.spawn_daemon_with_admin(args, Some(TOKEN)).await;
    let scene = deliver_some(&app, &ok, &bad).await;
    let base = format!("http://{admin}");
    let shots = screenshot_dir();

    browser.open(&format!("{base}/ui/failures")).await;
    assert!(
        browser.url().await.ends_with("/ui/login"),
        "a view without a session redirects"
    );
    browser.type_into("#token", "wrong-token-0123456789").await;
    browser.click("#sign-in").await;
    browser.wait_for(".error").await;
    assert_eq!(browser.text(".error").await, "Wrong token.");
    browser.screenshot(&shots.join("login.png")).await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#sign-in").await;
    browser.wait_for("#backlog-due").await;
    let url = browser.url().await;
    assert!(url.ends_with("/ui/"), "{url}: {}", browser.source().await);

    check_overview(&browser, &app, &scene).await;
    browser.screenshot(&shots.join("overview.png")).await;
    browser
        .open(&format!("{base}/ui/webhooks/{}", scene.failing))
        .await;
    check_webhook(&browser, &app, &scene).await;
    browser.screenshot(&shots.join("webhook.png")).await;
    browser.open(&format!("{base}/ui/failures")).await;
    check_failures(&browser, &app).await;
    browser.screenshot(&shots.join("failures.png")).await;

    browser.click("nav button").await;
    browser.wait_for("#token").await;
    assert!(browser.url().await.ends_with("/ui/login"));
    browser.open(&format!("{base}/ui/")).await;
    assert!(browser.url().await.ends_with("/ui/login"), "signed out");
    browser.quit().await;
    daemon.stop().await.unwrap();
}

async fn check_overview(browser: &Browser, app: &TestApp, scene: &Scene) {
    let source = browser.source().await;
    assert!(
        source.contains("billing &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{source}"
    );
    assert!(
        browser.find_all("script").await.is_empty(),
        "no script element got in"
    );
    let row = format!("tr[data-webhook='{}']", scene.failing);
    let label = browser.text(&format!("{row} td a")).await;
    assert_eq!(label, SCRIPT_LABEL, "the label is shown as text");
    for (webhook, status) in [(scene.failing, "failed"), (scene.healthy, "pending")] {
        let sql = format!(
            "SELECT count(*) FROM outbox.deliveries WHERE webhook_id = '{webhook}' AND status = '{status}'"
        );
        let shown = browser
            .text(&format!("tr[data-webhook='{webhook}'] td.{status}"))
            .await;
        assert_eq!(
            shown,
            app.db.count(&sql).await.to_string(),
            "{status} of {webhook}"
        );
    }
    assert!(browser
        .text(&row)
        .await
        .contains("HTTP 503 Service Unavailable"));
    assert_eq!(
        browser
            .find_all("table.webhooks tr[data-webhook]")
            .await
            .len(),
        3
    );
    let failed = app
        .db
        .count("SELECT count(*) FROM outbox.deliveries WHERE status = 'failed'");
    assert!(browser
        .text("#backlog-failed")
        .await
        .contains(&failed.await.to_string()));
    assert_eq!(
        browser.find_all("svg rect").await.len(),
        60,
        "30 minutes, two bars each"
    );
}

async fn check_webhook(browser: &Browser, app: &TestApp, scene: &Scene) {
    let heading = browser.text("h1").await;
    assert!(heading.starts_with(SCRIPT_LABEL), "{heading}");
    let sql = format!(
        "SELECT count(*) FROM outbox.deliveries WHERE webhook_id = '{}'",
        scene.failing
    );
    let rows = browser.find_all("tr[data-delivery]").await;
    assert_eq!(rows.len() as i64, app.db.count(&sql).await);
    let attempts = format!(
        "SELECT count(*) FROM outbox.delivery_attempts WHERE webhook_id = '{}'",
        scene.failing
    );
    let attempt_rows = browser.find_all("table.attempts tr").await.len() as i64;
    // Each delivery's attempt table has a header row.
    assert_eq!(
        attempt_rows - rows.len() as i64,
        app.db.count(&attempts).await
    );
    let table = browser.text("table.deliveries").await;
    assert!(table.contains("HTTP 503 Service Unavailable") && table.contains("http_status"));
    assert!(table.contains("503"), "the status code is shown");
}

async fn check_failures(browser: &Browser, app: &TestApp) {
    let failed = app
        .db
        .count("SELECT count(*) FROM outbox.deliveries WHERE status = 'failed'")
        .await;
    assert_eq!(
        browser.find_all("tr[data-delivery]").await.len() as i64,
        failed
    );
    assert!(browser
        .text("table.failures")
        .await
        .contains("HTTP 503 Service Unavailable"));
    assert!(browser.find_all("script").await.is_empty());
}
