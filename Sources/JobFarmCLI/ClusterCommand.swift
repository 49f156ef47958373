import ArgumentParser
import Foundation
import JobQueue
import RedisClient

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Redis Cluster operations: where queues live, and moving a queue's slot to another master.",
        subcommands: [WhereCommand.self, ReshardCommand.self])

    struct WhereCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "where", abstract: "Print each queue's hash slot and the master that owns it, and the cluster's masters.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Queues.") var queues: [String] = []

        func run() async throws {
            let client = try clusterClient(global)
            defer { client.close() }
            let masters = try await reportingErrors { try await client.masters() }
            print("masters: \(masters.joined(separator: ", "))")
            for queue in queues {
                let slot = ClusterSlot.of(queue)
                print("\(queue)  slot \(slot)  on \(try await reportingErrors { try await client.owner(ofSlot: slot) } ?? "no master")")
            }
        }
    }

    struct ReshardCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reshard",
            abstract: "Move a queue's hash slot (all its keys) to another master while producers and workers keep running.",
            discussion: """
                The keys move in one step on the old owner (a script: MIGRATING, MIGRATE … KEYS in batches, SETSLOT … NODE),
                so no request sees the slot half moved; requests to that master wait while the keys move. Clients follow
                the MOVED replies by themselves. If a step fails, run the same command again to finish the move.
                """)

        @OptionGroup var global: GlobalOptions
        @Option(help: "The queue whose slot moves (every key of jf:{<queue>}:…).") var queue: String?
        @Option(help: "The hash slot to move (instead of --queue).") var slot: Int?
        @Option(help: "The new owner: a master's host:port (`jobfarm cluster where` lists them).") var to: String

        func validate() throws {
            guard (queue == nil) != (slot == nil) else { throw ValidationError("name either --queue or --slot") }
        }

        func run() async throws {
            let client = try clusterClient(global)
            defer { client.close() }
            let slot = self.slot ?? ClusterSlot.of(queue!)
            let move = try await reportingErrors { try await client.moveSlot(slot, to: to) }
            if move.from == move.to {
                print("slot \(slot) is on \(move.to) already: nothing moved")
            } else {
                let ms = Double(move.stall.components.attoseconds) / 1e15 + Double(move.stall.components.seconds) * 1000
                print("moved slot \(slot)\(queue.map { " (queue \($0))" } ?? "") from \(move.from) to \(move.to): \(move.keys) keys, \(String(format: "%.1f", ms)) ms with \(move.from) busy")
            }
        }
    }
}

/// A client of the cluster named by --redis-url (or JOBFARM_REDIS_URL); a URL of one server is refused.
private func clusterClient(_ global: GlobalOptions) throws -> RedisClient {
    let configuration = try global.farmConfiguration().redis
    guard configuration.isCluster else {
        throw ValidationError("\(configuration) is one server; `jobfarm cluster` needs a Redis Cluster URL: redis+cluster://host:port[,host:port…]")
    }
    return RedisClient(configuration: configuration, name: "cluster")
}
