//! Many clusters rolled at once, on a real node: the operator paces them
//! (`--max-concurrent-rolls`), so that their handovers do not all come together.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::{Operator, Setup, TestResult, cluster_pods, redis_cluster, reports, wait_for};
use kube::api::{Patch, PatchParams, PostParams};
use rediscluster_crd::Phase;
use serde_json::json;

const CLUSTERS: [&str; 3] = ["paced-a", "paced-b", "paced-c"];

/// The clusters whose live pods run both images now: they are between their first and last
/// replaced pod.
async fn mid_roll(setup: &Setup) -> TestResult<Vec<&'static str>> {
    let mut mixed = Vec::new();
    for name in CLUSTERS {
        let pods = cluster_pods(&setup.client, &setup.namespace.name, name).await?;
        let images: Vec<String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
            .collect();
        if images.iter().any(|i| i == "redis:7.0") && images.iter().any(|i| i == "redis:7.2") {
            mixed.push(name);
        }
    }
    Ok(mixed)
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn an_image_change_of_every_cluster_rolls_them_one_at_a_time() -> TestResult {
    let Some(setup) = Setup::on_real_pods("rolls-paced").await? else {
        return Ok(());
    };
    let _operator = Operator::start_with(
        &setup.namespace.name,
        "operator",
        &["--max-concurrent-rolls", "1"],
    )?;
    for name in CLUSTERS {
        let mut cluster = redis_cluster(name, "redis:7.0", 2)?;
        cluster.spec.resources = serde_json::from_value(json!({"requests": {"cpu": "10m"}}))?;
        setup
            .clusters
            .create(&PostParams::default(), &cluster)
            .await?;
    }
    for name in CLUSTERS {
        wait_for(&setup.clusters, name, "Running", reports(Phase::Running, 2)).await?;
    }
    let started = Instant::now();
    for name in CLUSTERS {
        let patch = json!({"spec": {"image": "redis:7.2"}});
        setup
            .clusters
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // Sampled twice a second until every cluster runs the new image.
    let mut most_at_once = 0;
    let mut waited_for_a_turn = BTreeMap::new();
    let deadline = started + Duration::from_secs(300);
    loop {
        let mixed = mid_roll(&setup).await?;
        most_at_once = most_at_once.max(mixed.len());
        for name in CLUSTERS {
            let cluster = setup.clusters.get(name).await?;
            let waiting = cluster
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .any(|c| c.message.contains("turn to roll"));
            if waiting {
                waited_for_a_turn.insert(name, true);
            }
        }
        let done = setup
            .clusters
            .list(&Default::default())
            .await?
            .items
            .iter()
            .all(|c| reports(Phase::Running, 2)(Some(c)) && c.spec.image == "redis:7.2");
        if done && mixed.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(
                format!("not every cluster rolled within 300 s; mid-roll: {mixed:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = started.elapsed();
    assert_eq!(
        most_at_once, 1,
        "one cluster between its first and last new pod at a time"
    );
    assert!(
        waited_for_a_turn.len() >= 2,
        "the clusters after the first said they waited: {waited_for_a_turn:?}"
    );
    for name in CLUSTERS {
        for pod in cluster_pods(&setup.client, &setup.namespace.name, name).await? {
            let image = pod.spec.and_then(|s| s.containers.first()?.image.clone());
            assert_eq!(image.as_deref(), Some("redis:7.2"));
        }
    }
    println!(
        "figures: 3 clusters of 2 rolled one at a time in {:.1}s ({} said they waited)",
        took.as_secs_f64(),
        waited_for_a_turn.len()
    );
    Ok(())
}
