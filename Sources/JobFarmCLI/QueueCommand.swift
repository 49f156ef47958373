import ArgumentParser
import JobProtocol
import JobQueue

struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue", abstract: "Pause and resume queues or tiers; list what is paused.",
        subcommands: [PauseCommand.self, ResumeCommand.self, PausedCommand.self])

    struct PauseCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pause",
            abstract: "Stop workers leasing from a queue (or one tier) from their next fetch; enqueues are still accepted.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "The queue.") var queue: String
        @Option(help: "Pause only this tier.") var tier: String?

        func run() async throws {
            let farm = try global.makeFarm()
            try await reportingErrors { try await farm.pause(queue: queue, tier: tier) }
            print("paused \(queue)\(tier.map { " tier \($0)" } ?? ""): workers lease nothing from it until `jobfarm queue resume \(queue)\(tier.map { " --tier \($0)" } ?? "")`")
        }
    }

    struct ResumeCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resume", abstract: "Let workers lease from a paused queue (or tier) again; idle workers wake at once.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "The queue.") var queue: String
        @Option(help: "Resume only this tier (without it, the whole-queue pause is lifted; tiers paused one by one stay paused).")
        var tier: String?

        func run() async throws {
            let farm = try global.makeFarm()
            let was = try await reportingErrors { try await farm.resume(queue: queue, tier: tier) }
            let what = "\(queue)\(tier.map { " tier \($0)" } ?? "")"
            print(was ? "resumed \(what)" : "\(what) was not paused (`jobfarm queue paused` lists the pauses)")
        }
    }

    struct PausedCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "paused", abstract: "List the paused queues and tiers.")

        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let farm = try global.makeFarm()
            let pauses = try await reportingErrors { try await farm.pauses() }
            if json {
                printJSON(.array(pauses.map { pause in
                    .object(["queue": .string(pause.queue), "tier": pause.tier.map { .string($0) } ?? .string("*"),
                             "since": .number(Double(pause.since))])
                }))
                return
            }
            if pauses.isEmpty {
                print("nothing is paused")
                return
            }
            printTable(header: ["queue", "tier", "paused since"],
                       rows: pauses.map { [$0.queue, $0.tier ?? "* (whole queue)", isoTime($0.since)] })
        }
    }
}
