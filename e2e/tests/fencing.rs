//! A replaced primary acknowledges nothing: faults under a pooled client, a reconnecting one
//! and a watcher of which pods take writes (`e2e::fencing`), each fault twice in a row on one
//! cluster. Pass: no acknowledged write lost, of any age, and never two pods that take writes
//! as primaries. The operator reaches Redis by pod IP (`--redis-route direct`), so that a rule
//! on the host can cut it alone off from the primary.

mod fencing {
    use std::time::Duration;

    use e2e::faults::{clock, redis_pid, signal, wait_primary_other_than};
    use e2e::fencing::{Clients, CutOff, FenceFigures, OperatorCgroup};
    use e2e::{NAME, Operator, Setup, TestResult, real_node_or_skip, redis_url, wait_for};
    use kube::api::DeleteParams;

    /// The operator's default `--failover-after`.
    const FAILOVER_AFTER: f64 = 5.0;

    /// A Running 3-pod cluster with its own operator that dials pod IPs; None (said) where pods
    /// do not run, or where the test cannot signal the node's processes.
    async fn cluster(test: &str) -> TestResult<Option<(Setup, Operator, OperatorCgroup)>> {
        if !real_node_or_skip(&e2e::client().await?, test).await? {
            return Ok(None);
        }
        let setup = Setup::new(test).await?;
        let operator = Operator::start_with(
            &setup.namespace.name,
            "operator",
            &["--redis-route", "direct"],
        )?;
        let cgroup = OperatorCgroup::enter(operator.pid().ok_or("no operator process")?)?;
        setup.create_cluster("redis:7.0", 3).await?;
        setup.wait_running(3).await?;
        Ok(Some((setup, operator, cgroup)))
    }

    /// The primary's name and its Redis's host PID (None where it cannot be signalled).
    async fn primary(setup: &Setup) -> TestResult<(String, Option<i32>, String)> {
        let name = setup.assert_one_primary_and_linked_replicas().await?;
        let pod = setup.pods.get(&name).await?;
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .ok_or("the primary has no IP")?;
        // Seen is not enough: signalling another user's process takes root.
        let pid = match redis_pid(&pod) {
            Some(pid) if signal(pid, "-0").await.is_ok() => Some(pid),
            _ => None,
        };
        Ok((name, pid, ip))
    }

    /// Runs `fault` twice on a fresh cluster, each under the clients, and checks each round.
    async fn twice(
        test: &str,
        fault: impl AsyncFn(&Setup, &OperatorCgroup) -> TestResult<Option<(String, f64)>>,
    ) -> TestResult<Vec<FenceFigures>> {
        let Some((setup, _operator, cgroup)) = cluster(test).await? else {
            return Ok(vec![]);
        };
        let mut rounds = Vec::new();
        for round in 1..=2 {
            let Some(clients) = Clients::start(&setup).await? else {
                return Ok(vec![]);
            };
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some((scenario, fault_at)) = fault(&setup, &cgroup).await? else {
                eprintln!("SKIPPED {test}: the node's processes cannot be signalled from here");
                return Ok(vec![]);
            };
            let figures = clients
                .finish(&setup, &format!("{scenario} (round {round})"), fault_at)
                .await?;
            figures.assert_nothing_lost_and_one_writable_primary();
            rounds.push(figures);
        }
        Ok(rounds)
    }

    /// Stops the primary's Redis for `seconds`, then resumes it if it still exists; returns
    /// the old primary and when the stop began.
    async fn stall(setup: &Setup, seconds: u64) -> TestResult<Option<(String, f64)>> {
        let (old, Some(pid), _) = primary(setup).await? else {
            return Ok(None);
        };
        let at = clock()?;
        signal(pid, "-STOP").await?;
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        // Killed meanwhile (stopped before a replica took over): nothing to resume.
        let _ = signal(pid, "-CONT").await;
        Ok(Some((old, at)))
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_primary_stalled_3s_stays_primary_and_its_pooled_clients_resume() -> TestResult {
        let rounds = twice("fence-stall-3s", async |setup, _| {
            let Some((old, at)) = stall(setup, 3).await? else {
                return Ok(None);
            };
            setup.wait_running(3).await?;
            let now = setup.assert_one_primary_and_linked_replicas().await?;
            assert_eq!(now, old, "a 3 s stall is no failover");
            Ok(Some(("primary stalled 3s".to_owned(), at)))
        })
        .await?;
        for figures in &rounds {
            // The stall's end, plus up to a second of the fence: after a stall as long as its
            // lag (3 s, counted in whole seconds), Redis's once-a-second count of in-sync
            // replicas may find none, and writes are refused (NOREPLICAS) until their next
            // acknowledgement is counted. Seen once: 4.03 s.
            assert!(
                figures.pooled.back_after < 3.0 + 2.0,
                "the pooled writer resumes with the stall's end: {:.2}s",
                figures.pooled.back_after
            );
        }
        Ok(())
    }

    /// A stall past the failover delay: the stalled Redis is killed before a replica is
    /// promoted, so it never acknowledges the writes queued on its connections.
    async fn stalled_past_the_delay(test: &str, seconds: u64) -> TestResult {
        let rounds = twice(test, async |setup, _| {
            let (old, Some(pid), _) = primary(setup).await? else {
                return Ok(None);
            };
            let at = clock()?;
            signal(pid, "-STOP").await?;
            let resumed = async {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                let _ = signal(pid, "-CONT").await;
            };
            let replaced = async {
                let new = wait_primary_other_than(setup, &old).await?;
                TestResult::Ok((new, clock()?))
            };
            let (replaced, ()) = tokio::join!(replaced, resumed);
            let (new, replaced_at) = replaced?;
            println!(
                "figures: stalled {seconds}s: {new} primary {:.2}s after the stall began",
                replaced_at - at
            );
            setup.wait_running(3).await?;
            Ok(Some((format!("primary stalled {seconds}s"), at)))
        })
        .await?;
        for figures in &rounds {
            // --failover-after, a probe's timeout (the stall noticed by a probe sent just
            // before the delay ran out), the stop (the kubelet's 2 s minimum grace period, then
            // its report of the container gone: about 4 s), then routing and the pooled writer's
            // reconnection.
            let bound = FAILOVER_AFTER + 1.0 + 4.0 + 2.0;
            assert!(
                figures.pooled.back_after < bound,
                "pooled writes back {:.2}s after the stall began (bound {bound}s)",
                figures.pooled.back_after
            );
        }
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_primary_stalled_8s_is_stopped_before_a_replica_takes_over() -> TestResult {
        stalled_past_the_delay("fence-stall-8s", 8).await
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_primary_stalled_30s_is_stopped_before_a_replica_takes_over() -> TestResult {
        stalled_past_the_delay("fence-stall-30s", 30).await
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn an_operator_cut_off_from_the_primary_promotes_nothing() -> TestResult {
        let rounds = twice("fence-cut-off", async |setup, cgroup| {
            let (old, _, ip) = primary(setup).await?;
            let at = clock()?;
            let cut = CutOff::start(&ip, cgroup)?;
            // Long enough for the operator to see the primary silent past the failover delay.
            tokio::time::sleep(Duration::from_secs(30)).await;
            let status = setup.clusters.get_status(NAME).await?.status;
            let reason = status
                .as_ref()
                .and_then(|s| s.condition("PrimaryAvailable"))
                .map(|c| c.reason.clone());
            cut.end();
            assert_eq!(
                reason.as_deref(),
                Some("PrimaryUnreachable"),
                "the status says why nothing is promoted"
            );
            wait_for(&setup.clusters, NAME, "the primary available again", |c| {
                c.and_then(|c| c.status.as_ref())
                    .and_then(|s| s.condition("PrimaryAvailable"))
                    .is_some_and(|c| c.status == "True")
            })
            .await?;
            let now = setup.assert_one_primary_and_linked_replicas().await?;
            assert_eq!(now, old, "the replicas still heard from it: no failover");
            Ok(Some((
                "operator cut off from the primary 30s".to_owned(),
                at,
            )))
        })
        .await?;
        for figures in &rounds {
            assert_eq!(
                figures.pooled.failed_writes, 0,
                "the pooled writer is never interrupted"
            );
            assert!(figures.pooled.longest_gap < 1.0, "{:?}", figures.pooled);
        }
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_primary_busy_8s_in_a_script_loses_no_acknowledged_write() -> TestResult {
        twice("fence-busy", async |setup, _| {
            let (old, _, ip) = primary(setup).await?;
            let at = clock()?;
            let script = "local t = redis.call('TIME'); local s = t[1] + 8; \
                          while tonumber(redis.call('TIME')[1]) < s do end; return 1";
            let busy = async {
                let password = setup.password().await?;
                let client = redis::Client::open(redis_url(&ip, password.as_deref()))?;
                let mut connection = client.get_multiplexed_async_connection().await?;
                // Its answer does not matter: the Redis may be stopped before it ends.
                let _: Result<i64, _> = redis::cmd("EVAL")
                    .arg(script)
                    .arg(0)
                    .query_async(&mut connection)
                    .await;
                TestResult::Ok(())
            };
            let (busy, _) = tokio::join!(busy, tokio::time::sleep(Duration::from_secs(10)));
            busy?;
            setup.wait_running(3).await?;
            let now = setup.assert_one_primary_and_linked_replicas().await?;
            println!("figures: busy 8s: primary {old} before, {now} after");
            Ok(Some(("primary busy 8s in a script".to_owned(), at)))
        })
        .await?;
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_primary_pod_deleted_while_the_operator_is_cut_off_is_replaced_once_stopped()
    -> TestResult {
        twice("fence-delete-cut-off", async |setup, cgroup| {
            let (old, _, ip) = primary(setup).await?;
            let at = clock()?;
            let cut = CutOff::start(&ip, cgroup)?;
            setup.pods.delete(&old, &DeleteParams::default()).await?;
            // Its preStop waits for a handover that cannot come, then Redis stops.
            let stopped = async {
                wait_for(&setup.pods, &old, "the old primary's Redis stopped", |p| {
                    p.is_none_or(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            || p.status
                                .as_ref()
                                .and_then(|s| s.container_statuses.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().all(|c| {
                                        c.state.as_ref().is_none_or(|s| s.running.is_none())
                                    })
                                })
                    })
                })
                .await?;
                clock()
            };
            let replaced = async {
                let new = wait_primary_other_than(setup, &old).await?;
                TestResult::Ok((new, clock()?))
            };
            let (stopped_at, replaced) = tokio::join!(stopped, replaced);
            let (stopped_at, (new, replaced_at)) = (stopped_at?, replaced?);
            println!(
                "figures: deleted while cut off: its Redis stopped {:.2}s after the delete, {new} \
                 primary {:.2}s after that",
                stopped_at - at,
                replaced_at - stopped_at
            );
            assert!(
                replaced_at - stopped_at < 5.0,
                "a replica serves within 5 s of the old primary's process being gone"
            );
            cut.end();
            setup.wait_running(3).await?;
            Ok(Some((
                "primary pod deleted, operator cut off".to_owned(),
                at,
            )))
        })
        .await?;
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn scaling_3_to_1_while_the_primary_is_stalled_keeps_its_replicas() -> TestResult {
        twice("fence-scale-stalled", async |setup, _| {
            if setup.live_pods().await?.len() < 3 {
                // Back to 3 for the second round.
                setup
                    .patch_spec(serde_json::json!({ "replicas": 3 }))
                    .await?;
                setup.wait_running(3).await?;
            }
            let (old, Some(pid), _) = primary(setup).await? else {
                return Ok(None);
            };
            let at = clock()?;
            signal(pid, "-STOP").await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            setup
                .patch_spec(serde_json::json!({ "replicas": 1 }))
                .await?;
            // A replica takes over: the scale-down did not remove them while the primary was
            // in doubt.
            let new = wait_primary_other_than(setup, &old).await?;
            let _ = signal(pid, "-CONT").await;
            setup.wait_running(1).await?;
            println!("figures: scaled while stalled: {new} took over from {old}");
            Ok(Some(("scale 3 to 1, primary stalled".to_owned(), at)))
        })
        .await?;
        Ok(())
    }
}

mod leader {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use e2e::faults::{clock, redis_pid, signal, wait_primary_other_than};
    use e2e::fencing::Clients;
    use e2e::{Operator, Setup, TestResult, real_node_or_skip};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::jiff::Timestamp;
    use kube::Api;

    const LEASE: &str = "redis-operator-leader";

    /// The lines `operator` logged at or after `since` (whole seconds, UTC).
    fn logged_since(operator: &Operator, since: Timestamp) -> TestResult<Vec<String>> {
        let since = since.to_string();
        Ok(operator
            .logged()?
            .lines()
            .filter(|line| line.get(..19) >= since.get(..19))
            .map(str::to_owned)
            .collect())
    }

    /// A candidate that dials pod IPs, with a 6 s Lease, that goes on reconciling once it has
    /// lost the Lease (the failpoint), so that the tenure check is what stops its writes.
    fn candidate(namespace: &str, identity: &str) -> TestResult<Operator> {
        Operator::candidate(
            namespace,
            identity,
            6,
            &["--redis-route", "direct"],
            &[("REDIS_OPERATOR_FAILPOINTS", "ignore-lost-lease")],
        )
    }

    /// The Lease's holder.
    async fn holder(leases: &Api<Lease>) -> TestResult<String> {
        Ok(leases
            .get(LEASE)
            .await?
            .spec
            .and_then(|s| s.holder_identity)
            .ok_or("nobody holds the Lease")?)
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_leader_paused_past_its_lease_sends_nothing_when_it_wakes() -> TestResult {
        if e2e::in_cluster() || !real_node_or_skip(&e2e::client().await?, "fence-leader").await? {
            return Ok(());
        }
        let setup = Setup::new("fence-leader").await?;
        let namespace = setup.namespace.name.clone();
        let leases: Api<Lease> = Api::namespaced(setup.client.clone(), &namespace);
        let mut candidates = BTreeMap::new();
        candidates.insert(
            "candidate-0".to_owned(),
            candidate(&namespace, "candidate-0")?,
        );
        setup.create_cluster("redis:7.0", 3).await?;
        setup.wait_running(3).await?;
        for round in 1..=2 {
            // A fresh standby each round: the former leader, kept running by the failpoint,
            // takes part no more.
            let standby = format!("candidate-{round}");
            candidates.insert(standby.clone(), candidate(&namespace, &standby)?);
            let leader = holder(&leases).await?;
            let leader_pid = i32::try_from(candidates[&leader].pid().ok_or("no leader process")?)?;
            let old = setup.assert_one_primary_and_linked_replicas().await?;
            let Some(pid) = redis_pid(&setup.pods.get(&old).await?) else {
                return Ok(());
            };
            if signal(pid, "-0").await.is_err() {
                eprintln!("SKIPPED fence-leader: the node's processes cannot be signalled here");
                return Ok(());
            }
            let Some(clients) = Clients::start(&setup).await? else {
                return Ok(());
            };
            tokio::time::sleep(Duration::from_secs(1)).await;
            // The leader pauses, then the primary hangs: the failover falls due while the
            // leader is paused, and its Lease runs out meanwhile.
            let at = clock()?;
            signal(leader_pid, "-STOP").await?;
            signal(pid, "-STOP").await?;
            let new = wait_primary_other_than(&setup, &old).await;
            let woke = Timestamp::now();
            let _ = signal(leader_pid, "-CONT").await;
            let _ = signal(pid, "-CONT").await;
            let new = new?;
            // Long enough for the woken leader's requeued reconciles (every 5 s) to come.
            tokio::time::sleep(Duration::from_secs(8)).await;
            setup.wait_running(3).await?;
            let scenario = format!("leader paused past its Lease, then a failover (round {round})");
            let figures = clients.finish(&setup, &scenario, at).await?;
            figures.assert_nothing_lost_and_one_writable_primary();
            let after = logged_since(&candidates[&leader], woke)?;
            let acted: Vec<&String> = after
                .iter()
                .filter(|l| {
                    l.contains("sent to Redis")
                        || l.contains("primary changed")
                        || l.contains("stopping its Redis")
                        || l.contains("deleted to be recreated")
                })
                .collect();
            assert!(
                acted.is_empty(),
                "the former leader acted after it woke: {acted:#?}"
            );
            let refused = after.iter().filter(|l| l.contains("NotLeading")).count();
            assert!(
                refused > 0,
                "the woken leader reconciled, and its writes were refused: the case was hit"
            );
            println!(
                "figures: round {round}: {} took over and made {new} primary while {leader} was \
                 paused; woken, {leader} had {refused} reconcile(s) refused (NotLeading) and \
                 sent nothing",
                holder(&leases).await?
            );
        }
        Ok(())
    }
}
