// Package authz decides who may do what: roles, the rule each action
// follows, callers, key policies and grants. It is the one home of these
// rules; the broker asks it for decisions and keeps the plumbing (the
// request in the context, audit lines, status codes), cluster stores
// principal records and grants in its types, and internal/pki writes roles
// into client certificates.
//
// It depends on the standard library (and internal/strictjson) only: no
// HSM, no Raft, no gRPC, so every decision is tested without SoftHSM and
// the package builds with CGO_ENABLED=0.
//
// # Deciding a request
//
// A request passes two checks, on whichever node receives it:
//
//  1. The role gate (Allowed): the caller's role must be one the action
//     admits (see AccessFor). A front applies it before the operation runs.
//  2. The key check (Authorizer.DecideKey): when the operation reaches a
//     key, the key's policy and the caller's grants on it are evaluated
//     for the action and the request's encryption context, unless the role
//     alone decides for this action (ByRole). A Deny statement wins; else
//     an Allow statement or a grant lets the request through; else it is
//     refused.
//
// # Concurrency
//
// Roles, rules and parsed policies are immutable. An Authorizer is safe
// for concurrent use; its policy cache has its own lock.
package authz
