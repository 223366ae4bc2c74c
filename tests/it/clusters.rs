//! The throwaway PostgreSQL clusters the tests build on: their options, and a
//! standby that follows its primary and takes over when promoted.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use devkit::cluster::{ClusterOptions, ThrowawayCluster};

use crate::harness::wait_until;

async fn connect(cluster: &ThrowawayCluster) -> tokio_postgres::Client {
    webhookd::db::connect_single(&cluster.url())
        .await
        .expect("connect to the throwaway cluster")
}

async fn count_rows(client: &tokio_postgres::Client) -> i64 {
    client
        .query_typed_one("SELECT count(*) FROM replicated", &[])
        .await
        .expect("count rows")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_set_settings_replace_pg_hba_and_place_private_files() {
    let mut cluster = ClusterOptions::new()
        .conf_line("work_mem = '7MB'")
        .hba_lines(["local all all trust", "host all all 127.0.0.1/32 trust"])
        .file("extra.key", "not really a key")
        .start()
        .await
        .expect("a throwaway cluster with options");
    let client = connect(&cluster).await;
    let work_mem: String = client
        .query_typed_one("SHOW work_mem", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(work_mem, "7MB");
    let rules: i64 = client
        .query_typed_one("SELECT count(*) FROM pg_hba_file_rules", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rules, 2, "pg_hba.conf holds exactly the given lines");

    let key = std::fs::metadata(cluster.data_dir().join("extra.key")).unwrap();
    let data_dir = std::fs::metadata(cluster.data_dir()).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        (key.uid(), key.gid()),
        (data_dir.uid(), data_dir.gid()),
        "owned by the server's user"
    );
    drop(client);
    cluster.stop().await.expect("stop");
    assert!(!cluster.data_dir().exists(), "the directory is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_follows_its_primary_and_takes_over_when_promoted() {
    let mut primary = ClusterOptions::new()
        .replication()
        .start()
        .await
        .expect("a primary");
    let writer = connect(&primary).await;
    writer
        .batch_execute("CREATE TABLE replicated (n int); INSERT INTO replicated VALUES (1)")
        .await
        .unwrap();
    let standby = ThrowawayCluster::start_standby_of(&primary)
        .await
        .expect("a standby");
    assert_ne!(standby.port(), primary.port());
    writer
        .batch_execute("INSERT INTO replicated VALUES (2)")
        .await
        .unwrap();
    let reader = connect(&standby).await;
    wait_until(
        "the standby has replayed both rows",
        Duration::from_secs(30),
        || async { count_rows(&reader).await == 2 },
    )
    .await;
    let refused = reader
        .batch_execute("INSERT INTO replicated VALUES (3)")
        .await
        .expect_err("a standby is read-only");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );

    primary.stop_immediate().await.expect("stop the primary");
    assert!(connect_fails(&primary.url()).await, "the primary is down");
    standby.promote().await.expect("promote the standby");
    let promoted = connect(&standby).await;
    promoted
        .batch_execute("INSERT INTO replicated VALUES (3)")
        .await
        .expect("the promoted standby accepts writes");
    assert_eq!(count_rows(&promoted).await, 3);

    primary
        .start_again()
        .await
        .expect("start the old primary again");
    assert_eq!(
        count_rows(&connect(&primary).await).await,
        2,
        "crash recovery kept what the old primary had committed"
    );
}

async fn connect_fails(url: &str) -> bool {
    webhookd::db::connect_single(url).await.is_err()
}
