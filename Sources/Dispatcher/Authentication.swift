import Foundation
import Hummingbird
import JobQueue
import RedisClient

/// Whether the dispatcher asks for API keys.
public enum AuthenticationMode: String, Sendable {
    /// Every route but `/healthz`, `/readyz` and `/openapi.yaml` needs `Authorization: Bearer <key>` (the default).
    case apiKeys = "on"
    /// No keys: every request acts as the operator of tenant `dev`, with every tier and no rate limit. For local
    /// development only (`jobfarm serve --no-auth`, `JOBFARM_SERVE_AUTH=off`); the dispatcher logs a warning.
    case disabled = "off"
}

/// Who sent the request being handled: set by `AccessMiddleware` for the handler's task.
public struct Caller: Sendable {
    public var tenant: String
    /// The key's id (`nil` without authentication).
    public var keyID: String?
    /// Tiers this caller may submit to: the key's, bounded by the tenant's; `nil` for every tier.
    public var tiers: Set<String>?
    public var isOperator: Bool
    public var policy: TenantPolicy

    /// The caller of every request when authentication is off.
    public static let development = Caller(tenant: "dev", keyID: nil, tiers: nil, isOperator: true, policy: TenantPolicy())

    /// The caller of the request this task handles; `nil` outside a request that passed `AccessMiddleware`.
    @TaskLocal public static var current: Caller? = nil

    public func allows(tier: String) -> Bool { tiers?.contains(tier) ?? true }
}

/// Looks the bearer key up, and refuses: no key or an unknown one → 401 (`WWW-Authenticate: Bearer`); a tenant the
/// tenants file does not know, or an operator route without an operator key → 403. Tier checks need the body and
/// happen at submission (`Dispatcher.admit`).
struct AccessMiddleware<Context: RequestContext>: RouterMiddleware {
    let mode: AuthenticationMode
    let keys: any APIKeyLookup
    let tenants: TenantDirectory

    /// Routes anyone may call: probes and the contract.
    static var publicPaths: Set<String> { Set(["/healthz", "/readyz", "/openapi.yaml"]).union(Dispatcher.inferenceProtocolPublicPaths) }
    /// Routes only operator keys may call (path prefixes).
    static var operatorPrefixes: [String] { ["/metrics", "/v1/admin/"] }

    static func isOperatorRoute(_ path: String) -> Bool {
        operatorPrefixes.contains { path == $0 || ($0.hasSuffix("/") && path.hasPrefix($0)) }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if Self.publicPaths.contains(path) { return try await next(request, context) }
        guard mode == .apiKeys else {
            return try await Caller.$current.withValue(Caller.development) { try await next(request, context) }
        }
        guard let token = Self.bearer(request.headers[.authorization]) else {
            throw Problem(.unauthorized, detail: "no API key: send the header 'Authorization: Bearer <key>' (jobfarm apikey create makes one)",
                          headers: [.wwwAuthenticate: #"Bearer realm="jobfarm""#])
        }
        let found: APIKey?
        do {
            found = token.hasPrefix("jfk_") && token.utf8.count <= 128 ? try await keys.key(hash: APIKeySecret.hash(token)) : nil
        } catch let error as RedisError {
            throw JobFarmError(error, operation: "look up an API key")
        }
        guard let key = found else {
            throw Problem(.unauthorized, detail: "the API key is not valid (unknown or revoked): ask an operator for a key",
                          headers: [.wwwAuthenticate: #"Bearer realm="jobfarm", error="invalid_token""#])
        }
        guard let policy = tenants.policy(for: key.tenant) else {
            throw Problem(.forbidden, detail: "tenant '\(key.tenant)' is not in the dispatcher's tenants file: ask an operator to add it")
        }
        if Self.isOperatorRoute(path), !key.isOperator {
            throw Problem(.forbidden, detail: "\(path) is for operators: use a key made with jobfarm apikey create --operator")
        }
        var tiers = Set(key.tiers)
        if let allowed = policy.tiers { tiers.formIntersection(allowed) }
        let caller = Caller(tenant: key.tenant, keyID: key.id, tiers: tiers, isOperator: key.isOperator, policy: policy)
        return try await Caller.$current.withValue(caller) { try await next(request, context) }
    }

    /// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750).
    static func bearer(_ header: String?) -> String? {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return nil }
        let token = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }
}

extension DispatcherConfiguration {
    static let accessEnvironmentVariables: [(name: String, meaning: String)] = [
        ("JOBFARM_SERVE_AUTH", "on (API keys required) or off (local development only)"),
        ("JOBFARM_SERVE_TENANTS", "tenants file (JSON): tiers and rate limits per tenant"),
        ("JOBFARM_SERVE_KEY_CACHE_TTL", "how long a found API key is reused, e.g. 1s (0: ask Redis every request)"),
    ]

    /// `JOBFARM_SERVE_AUTH` and `JOBFARM_SERVE_KEY_CACHE_TTL`. `JOBFARM_SERVE_TENANTS` is read by `jobfarm serve`, which
    /// knows the farm's tiers (`TenantDirectory(contentsOfFile:tiers:)`).
    mutating func applyAccessEnvironment(_ environment: [String: String]) throws {
        if let value = environment["JOBFARM_SERVE_AUTH"] {
            guard let mode = AuthenticationMode(rawValue: value.lowercased()) else {
                throw JobFarmError.invalidArgument("JOBFARM_SERVE_AUTH '\(value)' must be on or off")
            }
            authentication = mode
        }
        if let value = environment["JOBFARM_SERVE_KEY_CACHE_TTL"] {
            guard let duration = Duration.parse(value), duration <= .seconds(60) else {
                throw JobFarmError.invalidArgument("JOBFARM_SERVE_KEY_CACHE_TTL '\(value)' must be a duration of 0s…60s such as 1s")
            }
            keyCacheTTL = duration
        }
    }
}
