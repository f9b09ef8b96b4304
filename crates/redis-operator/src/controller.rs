//! Wiring: the client, the watches and their caches, and the kube-runtime Controller.

use std::convert::identity;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use rediscluster_crd::{CRD_PATH, RedisCluster};
use serde::de::DeserializeOwned;
use thiserror::Error;
use tracing::{info, warn};

use crate::auth::{self, Credentials};
use crate::context::{Context, Settings, Stores};
use crate::http::{self, Health};
use crate::leader::{Election, Lease, Tenure};
use crate::metrics::Metrics;
use crate::names;
use crate::pacing::Pacing;
use crate::reconcile::{error_policy, reconcile};
use crate::redis::client::{Connections, Route, tls_client};
use crate::trim::{self, Packed};

/// Where the operator runs and how hard it works.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Watch one namespace instead of all of them.
    pub namespace: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Reconciles in flight at once (never two for the same object).
    pub concurrency: u16,
    pub settings: Settings,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub http_addr: SocketAddr,
    /// Take part in leader election and reconcile only while leading.
    pub election: Option<Election>,
    /// How the pods' Redis is reached, and how long it may take to answer.
    pub redis_route: Route,
    pub redis_timeout: Duration,
    /// The Secret (namespace, name) that holds the operator's key (`auth::load_credentials`).
    pub credentials_secret: (String, String),
    /// The CAs that pods' TLS certificates are verified against (`--tls-ca-file`).
    pub tls_ca_file: Option<PathBuf>,
}

/// Redis requests in flight at once, over all clusters: enough for every pod of a few clusters
/// being asked at once, few enough that thousands of silent pods cannot pile up sockets.
const REDIS_IN_FLIGHT: usize = 64;

/// Why the operator could not start or had to stop; each message says what to do about it.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(
        "cannot load a Kubernetes client configuration ({0}); set KUBECONFIG, pass --kubeconfig, or run inside a cluster"
    )]
    Config(String),
    #[error(
        "cannot reach the Kubernetes API server at {url} ({source}); check that the cluster is up and that the kubeconfig points at it"
    )]
    Unreachable { url: String, source: kube::Error },
    #[error(
        "the RedisCluster CRD is not installed; install it with `kubectl apply -f {CRD_PATH}` (or `redis-operator generate-crd | kubectl apply -f -`)"
    )]
    CrdMissing,
    #[error(
        "the API server refused to list RedisClusters ({0}); grant the operator's RBAC from config/rbac/"
    )]
    Forbidden(String),
    #[error("cannot serve HTTP on {addr} ({source}); pick another --http-addr")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Election(String),
    #[error(
        "cannot read or make the operator's key ({0}); grant get and create on that Secret (config/rbac/leader_election_role.yaml)"
    )]
    Credentials(String),
    #[error("cannot use --tls-ca-file ({0})")]
    TlsCa(String),
    #[error("lost leadership ({0}); exiting so that a fresh start rejoins the election")]
    LostLeadership(String),
}

/// The client configuration from `--kubeconfig`/`--context`, else `KUBECONFIG` or in-cluster.
pub async fn client_config(
    kubeconfig: Option<&PathBuf>,
    context: Option<&str>,
) -> Result<kube::Config, RunError> {
    let config = if kubeconfig.is_none() && context.is_none() {
        kube::Config::infer()
            .await
            .map_err(|e| RunError::Config(e.to_string()))?
    } else {
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..KubeConfigOptions::default()
        };
        let loaded = match kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| RunError::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        };
        loaded.map_err(|e| RunError::Config(e.to_string()))?
    };
    Ok(config)
}

/// A client that counts every request it sends in `metrics`, by verb.
fn new_client(config: kube::Config, metrics: &Arc<Metrics>) -> Result<Client, RunError> {
    let metrics = metrics.clone();
    let counting =
        tower::util::MapRequestLayer::new(move |request: ::http::Request<kube::client::Body>| {
            metrics.count_request(request.method(), request.uri());
            request
        });
    Ok(ClientBuilder::try_from(config)
        .map_err(|e| RunError::Config(e.to_string()))?
        .with_layer(&counting)
        .build())
}

/// Checks, before any watch starts, that the API server answers and serves RedisClusters.
pub async fn preflight(
    client: &Client,
    url: &str,
    namespace: Option<&str>,
) -> Result<(), RunError> {
    let api: Api<RedisCluster> = scoped(client.clone(), namespace);
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(RunError::CrdMissing),
        Err(kube::Error::Api(status)) if matches!(status.code, 401 | 403) => {
            Err(RunError::Forbidden(status.message))
        }
        Err(source) => Err(RunError::Unreachable {
            url: url.to_owned(),
            source,
        }),
    }
}

fn scoped<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    }
}

/// A cache of what `keep` makes of each object matching `config`, decoded as a `W` (dropping
/// what we never read before it is cached), and the stream of changes that feeds it (which the
/// controller polls). `on_synced` runs each time the cache holds a complete list.
fn cached_watch<W, C>(
    api: Api<W>,
    config: watcher::Config,
    keep: fn(W) -> C,
    on_synced: impl Fn() + Send + 'static,
) -> (
    Store<C>,
    impl Stream<Item = Result<C, watcher::Error>> + Send + 'static,
)
where
    W: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + 'static,
    C: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = W::kind(&()).into_owned();
    let cached = reader.clone();
    let started = Instant::now();
    let stream = reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .map_ok(move |event| trim::map_event(event, keep)),
    )
    .inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            let since_start_ms = started.elapsed().as_secs_f64() * 1000.0;
            info!(kind, objects = cached.len(), since_start_ms, "cache synced");
            on_synced();
        }
    })
    // Deletions count too: a deleted child must trigger its owner, which recreates it.
    .touched_objects();
    (reader, stream)
}

/// Runs the operator until SIGTERM or SIGINT (or, with leader election, until leadership ends).
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let client_config =
        client_config(config.kubeconfig.as_ref(), config.context.as_deref()).await?;
    let url = client_config.cluster_url.to_string();
    let metrics = Arc::new(Metrics::default());
    let client = new_client(client_config.clone(), &metrics)?;
    preflight(&client, &url, config.namespace.as_deref()).await?;
    let (namespace, name) = &config.credentials_secret;
    let credentials = auth::load_credentials(client.clone(), namespace, name)
        .await
        .map_err(RunError::Credentials)?;
    let tls = config
        .tls_ca_file
        .as_deref()
        .map(tls_client)
        .transpose()
        .map_err(RunError::TlsCa)?;

    let health = Arc::new(Health::new(metrics.clone()));
    http::serve(config.http_addr, health.clone())
        .await
        .map_err(|source| RunError::Http {
            addr: config.http_addr,
            source,
        })?;
    let shutdown = Shutdown::on_signals();

    let Some(election) = &config.election else {
        let tenure = Arc::new(Tenure::unbounded());
        let shared = Shared {
            tenure,
            credentials,
            tls,
        };
        reconcile_until(client, &config, &health, shared, shutdown.requested()).await;
        return Ok(());
    };
    // Renewals must fail fast rather than hang past the lease's expiry.
    let mut lease_config = client_config;
    lease_config.read_timeout = Some(election.renew_margin / 2);
    lease_config.write_timeout = Some(election.renew_margin / 2);
    let lease_client = new_client(lease_config, &metrics)?;
    let mut lease = Lease::join(lease_client, client.clone(), election)
        .await
        .map_err(|e| RunError::Election(format!("cannot join leader election: {e}")))?;
    // A standby is ready: it is doing all it should.
    health.set_ready(true);
    let tenure = Arc::new(Tenure::bounded());
    tokio::select! {
        () = lease.acquired(&tenure) => {}
        () = shutdown.requested() => {
            info!("stopped while standing by");
            return Ok(());
        }
    }
    metrics.set_leader(true);
    health.set_ready(false);
    let outcome = tokio::select! {
        () = reconcile_until(
            client,
            &config,
            &health,
            Shared { tenure: tenure.clone(), credentials, tls },
            shutdown.requested(),
        ) => Ok(()),
        // Dropping the controller stops every reconcile at once, before the lease can expire.
        reason = lease_lost(&lease) => Err(RunError::LostLeadership(reason)),
        () = lease.keep(&tenure) => Err(RunError::LostLeadership("the Lease's watch ended".to_owned())),
    };
    metrics.set_leader(false);
    lease.release().await;
    outcome
}

/// Returns why leadership ended. The failpoint `ignore-lost-lease` (in
/// `REDIS_OPERATOR_FAILPOINTS`, for the live suite) never returns instead, the controller
/// running on, so that a test can see the tenure check refuse every write of a former leader.
async fn lease_lost(lease: &Lease) -> String {
    let reason = lease.held().await;
    let failpoints = std::env::var("REDIS_OPERATOR_FAILPOINTS").unwrap_or_default();
    if failpoints.split(',').any(|f| f == "ignore-lost-lease") {
        warn!(%reason, "lost leadership; failpoint ignore-lost-lease keeps this instance running");
        std::future::pending::<()>().await;
    }
    reason
}

/// How children are listed and watched: only the operator's own, from etcd in pages of 100.
/// kube reads a list's whole response before decoding it, so one response with every child
/// (from the watch cache, as RedisClusters are listed) costs about 15 MiB more at 1000
/// clusters, and a busy API server serves it no sooner.
fn child_watch_config() -> watcher::Config {
    watcher::Config::default()
        .labels(&names::managed_by_selector())
        .page_size(100)
}

/// How the claims of clusters with storage are listed and watched: the StatefulSet gives them
/// its selector's labels, not ours (see `desired::statefulset`), so they are selected by
/// `app.kubernetes.io/name=redis`, and a reconcile takes those named for its cluster's pods.
fn claim_watch_config() -> watcher::Config {
    watcher::Config::default()
        .labels(&format!("{}={}", names::NAME_LABEL, names::APP_NAME))
        .page_size(100)
}

/// How RedisClusters are listed and watched. Custom resources are slow to read from etcd (each
/// one is decoded, pruned and defaulted against the schema, one by one): like client-go's
/// informers, list them from the API server's watch cache (resourceVersion 0) in one response;
/// the watch that follows catches up from the list's version. kube leaves resourceVersion 0
/// out of a list that has a page size (the watch cache cannot page), so there must be none.
fn cluster_watch_config() -> watcher::Config {
    let mut config = watcher::Config::default().any_semantic();
    config.page_size = None;
    config
}

/// Watches and reconciles until `shutdown` resolves, then lets in-flight reconciles finish.
/// `/readyz` turns ready once every cache holds its first complete list.
async fn reconcile_until(
    client: Client,
    config: &RunConfig,
    health: &Arc<Health>,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = config.namespace.as_deref();
    let (stores, children) = watch_children(&client, namespace);
    let (clusters_listed, clusters_synced) = tokio::sync::watch::channel(false);
    let (clusters, cluster_events) = cached_watch(
        scoped(client.clone(), namespace),
        cluster_watch_config(),
        trim::cluster,
        move || {
            clusters_listed.send_replace(true);
        },
    );
    health.set_clusters(clusters.clone());
    // Every list runs at once; only reconciles wait for the child caches, because a
    // reconcile that cannot see an existing child would try to create it.
    let children_synced = children_synced(stores.clone()).shared();
    let readiness = {
        let (children_synced, health) = (children_synced.clone(), health.clone());
        async move {
            children_synced.await;
            let mut clusters_synced = clusters_synced;
            // An error means the watch is gone, and so is the controller.
            if clusters_synced.wait_for(|synced| *synced).await.is_ok() {
                health.set_ready(true);
            }
        }
    };
    let reconcile = move |cluster, ctx| {
        let children_synced = children_synced.clone();
        async move {
            children_synced.await;
            reconcile(cluster, ctx).await
        }
    };
    let pacing = Pacing::new(clusters.clone(), config.concurrency);
    let context = Arc::new(context(client, stores, config, health, shared).with_pacing(pacing));
    info!(
        namespace = namespace.unwrap_or("(all)"),
        concurrency = config.concurrency,
        "starting the controller"
    );
    let controller = Controller::for_stream(cluster_events, clusters)
        .owns_stream(children.statefulsets)
        .owns_stream(children.services)
        .owns_stream(children.disruption_budgets)
        .watches_stream(children.pods, cluster_of)
        .watches_stream(children.claims, cluster_of)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            report_controller(result);
            future::ready(())
        });
    let (controller, readiness) = (std::pin::pin!(controller), std::pin::pin!(readiness));
    if let future::Either::Right(((), controller)) = future::select(controller, readiness).await {
        controller.await;
    }
    info!("controller stopped");
}

/// The change streams of the children's caches, which the controller polls.
struct ChildEvents<S, V, P, B, C> {
    statefulsets: S,
    services: V,
    pods: P,
    disruption_budgets: B,
    claims: C,
}

/// The caches of the children and their change streams.
#[allow(clippy::type_complexity)]
fn watch_children(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Stores,
    ChildEvents<
        impl Stream<Item = Result<Packed<StatefulSet>, watcher::Error>> + Send + 'static,
        impl Stream<Item = Result<Packed<Service>, watcher::Error>> + Send + 'static,
        impl Stream<Item = Result<Packed<Pod>, watcher::Error>> + Send + 'static,
        impl Stream<Item = Result<PodDisruptionBudget, watcher::Error>> + Send + 'static,
        impl Stream<Item = Result<PersistentVolumeClaim, watcher::Error>> + Send + 'static,
    >,
) {
    let (statefulsets, statefulset_events) = cached_watch(
        scoped(client.clone(), namespace),
        child_watch_config(),
        identity,
        || {},
    );
    let (services, service_events) = cached_watch(
        scoped(client.clone(), namespace),
        child_watch_config(),
        identity,
        || {},
    );
    let (pods, pod_events) = cached_watch(
        scoped(client.clone(), namespace),
        child_watch_config(),
        identity,
        || {},
    );
    let (disruption_budgets, budget_events) = cached_watch(
        scoped(client.clone(), namespace),
        child_watch_config(),
        trim::keep,
        || {},
    );
    let (claims, claim_events) = cached_watch(
        scoped(client.clone(), namespace),
        claim_watch_config(),
        trim::keep,
        || {},
    );
    let stores = Stores {
        statefulsets,
        services,
        pods,
        disruption_budgets,
        claims,
    };
    let events = ChildEvents {
        statefulsets: statefulset_events,
        services: service_events,
        pods: pod_events,
        disruption_budgets: budget_events,
        claims: claim_events,
    };
    (stores, events)
}

/// What the run hands every reconcile besides the client and caches: the leader's tenure, the
/// operator's key and its TLS client.
struct Shared {
    tenure: Arc<Tenure>,
    credentials: Credentials,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// What every reconcile shares: the client, the caches, the settings, and the pods' Redis.
fn context(
    client: Client,
    stores: Stores,
    config: &RunConfig,
    health: &Health,
    shared: Shared,
) -> Context {
    let redis = Arc::new(Connections::new(
        client.clone(),
        health.metrics.clone(),
        config.redis_route,
        config.redis_timeout,
        REDIS_IN_FLIGHT,
        shared.tls,
    ));
    Context::new(
        client,
        stores,
        config.settings.clone(),
        health.metrics.clone(),
        redis,
        shared.credentials,
    )
    .with_tenure(shared.tenure)
}

/// Reconcile outcomes are logged by `reconcile`; this reports the machinery.
fn report_controller<T, E: std::error::Error, Q: std::error::Error>(
    result: Result<T, controller::Error<E, Q>>,
) {
    match result {
        Err(controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
        Err(controller::Error::ObjectNotFound(object)) => {
            info!(cluster = %object, "RedisCluster is gone; nothing to do");
        }
        Err(error) => warn!(%error, "controller error"),
    }
}

/// Resolves every `requested()` once SIGTERM or SIGINT has arrived.
#[derive(Clone)]
struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    fn on_signals() -> Self {
        let (sender, receiver) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal_received().await;
            info!("shutdown requested");
            let _ = sender.send(true);
        });
        Self(receiver)
    }

    fn requested(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut receiver = self.0.clone();
        async move {
            // An error means the sender is gone, which only happens after it sent.
            let _ = receiver.wait_for(|requested| *requested).await;
        }
    }
}

async fn signal_received() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

async fn children_synced(stores: Stores) {
    let synced = futures::join!(
        stores.statefulsets.wait_until_ready(),
        stores.services.wait_until_ready(),
        stores.pods.wait_until_ready(),
        stores.disruption_budgets.wait_until_ready(),
        stores.claims.wait_until_ready(),
    );
    if let (Ok(()), Ok(()), Ok(()), Ok(()), Ok(())) = synced {
        info!("caches synced");
    }
}

/// A pod or a claim belongs to the RedisCluster named by its instance label, in its namespace
/// (the StatefulSet, not the cluster, controls them).
fn cluster_of<K: Resource>(object: K) -> Option<ObjectRef<RedisCluster>> {
    let namespace = object.namespace()?;
    let name = object.labels().get(names::INSTANCE_LABEL)?;
    Some(ObjectRef::new(name).within(&namespace))
}

#[cfg(test)]
mod tests;
