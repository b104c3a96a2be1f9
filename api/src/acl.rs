//! Consul's ACL objects as its Go client encodes them (`api/acl.go`): field order, `omitempty`
//! and lowercase `name` of templated-policy variables included, so that a program printing them
//! as JSON (`agent acl token read -format=json`) prints what Consul's CLI prints. Decoding is
//! lenient, as for the other types: missing fields and `null` lists default.

use crate::types::null_default;
use serde::{Deserialize, Serialize};

/// A token's or role's link to a policy or role: stored by ID, named on every read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclLink {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclServiceIdentity {
    pub service_name: String,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclNodeIdentity {
    pub node_name: String,
    pub datacenter: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AclTemplateVariables {
    #[serde(alias = "Name")]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclTemplatedPolicy {
    pub template_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<AclTemplateVariables>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// `GET /v1/acl/token/:id`, the answer of token writes and of `PUT /v1/acl/bootstrap`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclToken {
    pub create_index: u64,
    pub modify_index: u64,
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    pub description: String,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AclLink>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<AclLink>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub service_identities: Vec<AclServiceIdentity>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub node_identities: Vec<AclNodeIdentity>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub templated_policies: Vec<AclTemplatedPolicy>,
    pub local: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_method: String,
    /// RFC 3339; absent for a token that does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
    pub create_time: String,
    /// Base64, as Go encodes a `[]byte`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// One entry of `GET /v1/acl/tokens` (Go's `ACLTokenListEntry`: the token without input-only
/// fields, and `Legacy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclTokenListEntry {
    pub create_index: u64,
    pub modify_index: u64,
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    pub description: String,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AclLink>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<AclLink>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub service_identities: Vec<AclServiceIdentity>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub node_identities: Vec<AclNodeIdentity>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub templated_policies: Vec<AclTemplatedPolicy>,
    pub local: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
    pub create_time: String,
    pub hash: String,
    pub legacy: bool,
}

/// Go marshals a nil `[]string` as `null`; a policy created without datacenters has none.
fn null_if_empty<S: serde::Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        v.serialize(s)
    }
}

/// `GET /v1/acl/policy/:id` and the answer of policy writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclPolicy {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub description: String,
    pub rules: String,
    #[serde(deserialize_with = "null_default", serialize_with = "null_if_empty")]
    pub datacenters: Vec<String>,
    pub hash: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One entry of `GET /v1/acl/policies` (no rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclPolicyListEntry {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(deserialize_with = "null_default", serialize_with = "null_if_empty")]
    pub datacenters: Vec<String>,
    pub hash: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// `GET /v1/acl/role/:id`, each entry of `GET /v1/acl/roles`, and the answer of role writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclRole {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AclLink>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub service_identities: Vec<AclServiceIdentity>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub node_identities: Vec<AclNodeIdentity>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub templated_policies: Vec<AclTemplatedPolicy>,
    pub hash: String,
    pub create_index: u64,
    pub modify_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_encode_in_gos_field_order_and_omit_what_go_omits() {
        let t: AclToken = serde_json::from_str(
            r#"{"AccessorID":"a","SecretID":"s","Description":"d","Policies":null,
                "ServiceIdentities":[{"ServiceName":"web","Datacenters":null}],
                "TemplatedPolicies":[{"TemplateName":"builtin/service","TemplateVariables":{"name":"web"}}],
                "Local":false,"CreateTime":"2025-01-01T00:00:00Z","Hash":"aGk=","CreateIndex":5,"ModifyIndex":6}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"CreateIndex":5,"ModifyIndex":6,"AccessorID":"a","SecretID":"s","Description":"d","ServiceIdentities":[{"ServiceName":"web"}],"TemplatedPolicies":[{"TemplateName":"builtin/service","TemplateVariables":{"name":"web"}}],"Local":false,"CreateTime":"2025-01-01T00:00:00Z","Hash":"aGk="}"#
        );
    }

    #[test]
    fn policies_without_datacenters_encode_null_as_go_does() {
        let p: AclPolicy = serde_json::from_str(r#"{"ID":"p","Name":"n","Datacenters":[]}"#).unwrap();
        let v: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert!(v["Datacenters"].is_null(), "{v}");
        let p = AclPolicy { datacenters: vec!["dc1".into()], ..p };
        assert_eq!(serde_json::to_value(&p).unwrap()["Datacenters"], serde_json::json!(["dc1"]));
    }
}
