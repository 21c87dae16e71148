//! llm steps answered by the MCP client's own model (`sampling/createMessage`), for servers
//! with no `[llm]` configured. Sampling is a server-to-client request, which protocol
//! `2026-07-28` removed; it is used with clients that negotiated an earlier version and
//! declared the `sampling` capability.

// Sampling is deprecated by SEP-2577 (protocol 2026-07-28); older clients still speak it.
#![allow(deprecated)]

use crate::exec::adapter::{BoxFuture, CallError, Llm, LlmReply, LlmRequest, Usage, excerpt};
use rmcp::model::{CreateMessageRequestParams, ProtocolVersion, SamplingMessage};
use rmcp::{Peer, RoleServer};
use std::fmt;

/// The most tokens a sampled reply may have.
pub const MAX_TOKENS: u32 = 4096;

/// The client's model, through its peer.
pub struct Sampling {
    peer: Peer<RoleServer>,
}

impl fmt::Debug for Sampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sampling")
    }
}

impl Sampling {
    /// The client's model, when the client offers sampling on a protocol that allows it.
    pub fn of(peer: &Peer<RoleServer>) -> Option<Self> {
        let info = peer.peer_info()?;
        let offers = info.capabilities.sampling.is_some()
            && info.protocol_version < ProtocolVersion::V_2026_07_28;
        offers.then(|| Self { peer: peer.clone() })
    }
}

impl Llm for Sampling {
    fn complete<'a>(&'a self, req: LlmRequest<'a>) -> BoxFuture<'a, Result<LlmReply, CallError>> {
        Box::pin(async move {
            let mut params = CreateMessageRequestParams::new(
                vec![SamplingMessage::user_text(req.prompt)],
                MAX_TOKENS,
            );
            if let Some(system) = req.system {
                params = params.with_system_prompt(system);
            }
            #[allow(deprecated)]
            // sampling is deprecated by SEP-2577, still what older clients speak
            let result = self.peer.create_message(params).await.map_err(|e| {
                CallError::Failed(format!(
                    "the client's model (MCP sampling) failed: {}",
                    excerpt(&e.to_string(), 300)
                ))
            })?;
            let text: Vec<&str> = result
                .message
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                .collect();
            if text.is_empty() {
                return Err(CallError::Failed(
                    "the client's model (MCP sampling) answered without text".to_owned(),
                ));
            }
            Ok(LlmReply {
                text: text.join("\n"),
                usage: None::<Usage>,
            })
        })
    }
}
