//! Reading a source Secret the user supplied. What it yields is `decide::step::source`'s call.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, GetParams};

use super::Context;
use crate::Result;

/// Reads a source Secret at no older than the resourceVersion the metadata watch last delivered
/// for it: the API server answers that from its watch cache instead of a quorum read of etcd, and
/// the answer is never older than the version that woke us. (Unknown to the index: a plain read.)
/// `None`: not found.
pub(super) async fn read(ctx: &Context, ns: &str, name: &str) -> Result<Option<Secret>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let seen = GetParams {
        resource_version: ctx.sources.version(ns, name),
    };
    let mut got = secrets.get_with(name, &seen).await;
    // A server whose cache has not reached that version yet ("Too large resource version", 504
    // after its wait) still answers a plain read.
    if seen.resource_version.is_some() && matches!(&got, Err(kube::Error::Api(s)) if s.code == 504) {
        got = secrets.get_with(name, &GetParams::default()).await;
    }
    match got {
        Ok(s) => Ok(Some(s)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}
