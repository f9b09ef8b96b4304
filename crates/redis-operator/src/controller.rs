//! Wiring: the client, the watches and their caches, and the kube-runtime Controller.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt, future, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use rediscluster_crd::{CRD_PATH, RedisCluster};
use serde::de::DeserializeOwned;
use thiserror::Error;
use tracing::{info, warn};

use crate::build;
use crate::context::{Context, Settings, Stores};
use crate::reconcile::{error_policy, reconcile};

/// Where the operator runs and how hard it works.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// Watch one namespace instead of all of them.
    pub namespace: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Reconciles in flight at once (never two for the same object).
    pub concurrency: u16,
    pub settings: Settings,
}

/// Why the operator could not start; each message says what to do about it.
#[derive(Debug, Error)]
pub enum StartupError {
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
}

/// A client from `--kubeconfig`/`--context`, else `KUBECONFIG` or the in-cluster config, and the
/// API server's address (for error messages).
pub async fn client(
    kubeconfig: Option<&PathBuf>,
    context: Option<&str>,
) -> Result<(Client, String), StartupError> {
    let config = if kubeconfig.is_none() && context.is_none() {
        kube::Config::infer()
            .await
            .map_err(|e| StartupError::Config(e.to_string()))?
    } else {
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..KubeConfigOptions::default()
        };
        let loaded = match kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| StartupError::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        };
        loaded.map_err(|e| StartupError::Config(e.to_string()))?
    };
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| StartupError::Config(e.to_string()))?;
    Ok((client, url))
}

/// Checks, before any watch starts, that the API server answers and serves RedisClusters.
pub async fn preflight(
    client: &Client,
    url: &str,
    namespace: Option<&str>,
) -> Result<(), StartupError> {
    let api: Api<RedisCluster> = scoped(client.clone(), namespace);
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(StartupError::CrdMissing),
        Err(kube::Error::Api(status)) if matches!(status.code, 401 | 403) => {
            Err(StartupError::Forbidden(status.message))
        }
        Err(source) => Err(StartupError::Unreachable {
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

/// A cache of `K` objects matching `config`, and the stream of changes that feeds it (which the
/// controller polls). `trim` drops what we never read, before it is cached.
fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .modify(move |object| {
                object.managed_fields_mut().clear();
                trim(object);
            }),
    )
    // Deletions count too: a deleted child must trigger its owner, which recreates it.
    .touched_objects();
    (reader, stream)
}

/// Pods are cached only to spot stuck containers: keep labels and status, drop the rest.
fn trim_pod(pod: &mut Pod) {
    pod.spec = None;
    pod.metadata.annotations = None;
}

fn keep_all<K>(_: &mut K) {}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(config: RunConfig) -> Result<(), StartupError> {
    let (client, url) = client(config.kubeconfig.as_ref(), config.context.as_deref()).await?;
    let namespace = config.namespace.as_deref();
    preflight(&client, &url, namespace).await?;

    let owned = watcher::Config::default().labels(&build::managed_by_selector());
    let (statefulsets, statefulset_events) =
        cached_watch(scoped(client.clone(), namespace), owned.clone(), keep_all);
    let (services, service_events) =
        cached_watch(scoped(client.clone(), namespace), owned.clone(), keep_all);
    let (pods, pod_events) = cached_watch(scoped(client.clone(), namespace), owned, trim_pod);
    let stores = Stores {
        statefulsets,
        services,
        pods,
    };

    let (clusters, cluster_events) = cached_watch::<RedisCluster>(
        scoped(client.clone(), namespace),
        watcher::Config::default(),
        keep_all,
    );
    // No reconcile before the child caches are filled: a reconcile that cannot see an existing
    // child would try to create it.
    let children_synced = children_synced(stores.clone());
    let cluster_events = stream::once(children_synced.map(move |()| cluster_events)).flatten();

    let context = Arc::new(Context::new(client, stores, config.settings.clone()));
    info!(
        namespace = namespace.unwrap_or("(all)"),
        concurrency = config.concurrency,
        "starting redis-operator"
    );
    Controller::for_stream(cluster_events, clusters)
        .owns_stream(statefulset_events)
        .owns_stream(service_events)
        .watches_stream(pod_events, pod_owner)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            // Reconcile outcomes are logged by `reconcile`; this reports the machinery.
            match result {
                Err(controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                Err(controller::Error::ObjectNotFound(object)) => {
                    info!(cluster = %object, "RedisCluster is gone; nothing to do");
                }
                Err(error) => warn!(%error, "controller error"),
            }
            future::ready(())
        })
        .await;
    info!("redis-operator stopped");
    Ok(())
}

async fn children_synced(stores: Stores) {
    let synced = futures::join!(
        stores.statefulsets.wait_until_ready(),
        stores.services.wait_until_ready(),
        stores.pods.wait_until_ready(),
    );
    if let (Ok(()), Ok(()), Ok(())) = synced {
        info!("caches synced");
    }
}

/// A pod belongs to the RedisCluster named by its instance label, in its namespace.
fn pod_owner(pod: Pod) -> Option<ObjectRef<RedisCluster>> {
    let namespace = pod.namespace()?;
    let name = pod.labels().get(build::INSTANCE_LABEL)?;
    Some(ObjectRef::new(name).within(&namespace))
}
