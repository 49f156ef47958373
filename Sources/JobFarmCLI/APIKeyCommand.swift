import ArgumentParser
import Dispatcher
import Foundation
import JobProtocol
import JobQueue
import RedisClient

/// `jobfarm apikey`: the dispatcher's API keys (stored in Redis as SHA-256 hashes only).
struct APIKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikey",
        abstract: "Create, list and revoke the dispatcher's API keys (jobfarm serve).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a key for a tenant and print it once (only its SHA-256 is stored: it cannot be shown again).",
            discussion: "--tiers (the option every command takes) names the tiers the key may submit to, e.g. "
                + "jobfarm apikey create --tenant acme --tiers premium,standard; without it, every tier. The tenants file of "
                + "jobfarm serve may narrow them further.")

        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant the key belongs to (1–64 of A–Z a–z 0–9 _ - .).") var tenant: String
        @Flag(name: .customLong("operator"), help: "The key may call the operator routes (/metrics).") var isOperator = false
        @Flag(help: "Print JSON (id, key, tenant, tiers, operator).") var json = false

        func validate() throws {
            guard TenantDirectory.isValidName(tenant) else { throw ValidationError("--tenant '\(tenant)' must be 1–64 of A–Z a–z 0–9 _ - .") }
        }

        func run() async throws {
            let configuration = try global.farmConfiguration()
            let tiers = configuration.tiers
            let keys = RedisAPIKeys(client: RedisClient(configuration: configuration.redis, name: "apikey"), namespace: configuration.namespace)
            let (key, record) = try await reportingErrors { try await keys.create(tenant: tenant, tiers: tiers, isOperator: isOperator) }
            if json {
                printJSON(.object(["id": .string(record.id), "key": .string(key), "tenant": .string(record.tenant),
                                   "tiers": .array(record.tiers.map(JSONValue.string)), "operator": .bool(record.isOperator)]))
            } else {
                print(key)
                FileHandle.standardError.write(Data("""
                    key \(record.id) for tenant \(record.tenant), tiers \(record.tiers.joined(separator: ","))\(record.isOperator ? ", operator" : ""): \
                    shown once, only its SHA-256 is kept. Send it as 'Authorization: Bearer <key>'.

                    """.utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the keys: id, tenant, tiers, operator, created (never the key).")

        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let configuration = try global.farmConfiguration()
            let keys = RedisAPIKeys(client: RedisClient(configuration: configuration.redis, name: "apikey"), namespace: configuration.namespace)
            let all = try await reportingErrors { try await keys.list() }
            if json {
                printJSON(.array(all.map { key in
                    .object(["id": .string(key.id), "tenant": .string(key.tenant), "tiers": .array(key.tiers.map(JSONValue.string)),
                             "operator": .bool(key.isOperator), "createdAt": .number(Double(key.createdAt))])
                }))
                return
            }
            if all.isEmpty { print("no API keys; make one with: jobfarm apikey create --tenant NAME") }
            for key in all {
                let created = Date(timeIntervalSince1970: Double(key.createdAt) / 1000).formatted(.iso8601)
                print("\(key.id)  \(key.tenant)  tiers=\(key.tiers.joined(separator: ","))\(key.isOperator ? "  operator" : "")  created=\(created)")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a key by id: every dispatcher refuses it within its key cache TTL (1 s by default), without a restart.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Key id (jobfarm apikey list).") var id: String

        func run() async throws {
            let configuration = try global.farmConfiguration()
            let keys = RedisAPIKeys(client: RedisClient(configuration: configuration.redis, name: "apikey"), namespace: configuration.namespace)
            guard try await reportingErrors({ try await keys.revoke(id: id) }) else {
                throw CLIError(message: "no API key with id '\(id)'; jobfarm apikey list shows the ids")
            }
            print("revoked \(id)")
        }
    }
}
