import ArgumentParser
import Foundation
import JobProtocol
import JobQueue
import Pipelines
import Schedules

/// The time zone, missed-run policy and grace of a schedule given on the command line.
struct ScheduleTimingOptions: ParsableArguments {
    @Option(name: .customLong("tz"), help: "IANA time zone (default UTC), e.g. Europe/Berlin.") var timeZone: String = "UTC"
    @Option(help: "A firing the farm missed: skip, or catch_up_once.") var missed: String = "skip"
    @Option(help: "How late a firing still counts as on time: seconds, or 90s, 5m, 1h.") var grace: String = "5m"

    func policy() throws -> MissedRunPolicy {
        guard let policy = MissedRunPolicy(rawValue: missed) else {
            throw ValidationError("--missed \(missed): use skip or catch_up_once")
        }
        return policy
    }

    func graceDuration() throws -> Duration {
        var seconds: Double = 0
        var number = ""
        for character in grace {
            if character.isNumber || character == "." { number.append(character); continue }
            guard let value = Double(number) else { throw ValidationError("--grace \(grace): write seconds, or 90s, 5m, 1h") }
            switch character {
            case "s": seconds += value
            case "m": seconds += value * 60
            case "h": seconds += value * 3600
            default: throw ValidationError("--grace \(grace): write seconds, or 90s, 5m, 1h")
            }
            number = ""
        }
        if !number.isEmpty {
            guard let value = Double(number) else { throw ValidationError("--grace \(grace): write seconds, or 90s, 5m, 1h") }
            seconds += value
        }
        return .milliseconds(Int64(seconds * 1000))
    }
}

struct ScheduleAddCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add (or replace) a schedule firing a job (--kind) or a pipeline (--pipeline FILE); prints its next firing.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Schedule name: 1–64 of A–Z a–z 0–9 _ -.") var name: String
    @Option(help: "Cron expression, quoted: \"0 2 * * *\", \"*/15 9-17 * * mon-fri\", \"@hourly\".") var cron: String
    @OptionGroup var timing: ScheduleTimingOptions
    @Option(help: "Kind of the job to fire.") var kind: String?
    @Option(help: "Queue of the job.") var queue: String = "default"
    @Option(help: "Tier of the job.") var tier: String?
    @Option(help: "Payload of the job: JSON text, @file, or @- for standard input.") var payload: String?
    @Option(help: "A pipeline file to run instead of a job (its text is stored: workers need not have the file).") var pipeline: String?
    @Option(name: .customLong("param"), help: "A pipeline parameter, name=value (repeatable).") var params: [String] = []

    func run() async throws {
        guard ScheduleDefinition.isValidName(name) else { throw ValidationError("schedule name `\(name)` must be 1–64 of A–Z a–z 0–9 _ -") }
        let target: ScheduleDefinition.Target
        switch (kind, pipeline) {
        case (let kind?, nil):
            guard QueueKeys.isValidName(queue) else { throw ValidationError("--queue \(queue) must be 1–64 of A–Z a–z 0–9 _ - .") }
            target = .job(kind: kind, queue: queue, tier: tier, payload: payload != nil ? try readPayload(payload) : .null)
        case (nil, let file?):
            var given: [String: JSONValue] = [:]
            for param in params {
                guard let equals = param.firstIndex(of: "=") else { throw ValidationError("--param \(param): write name=value") }
                let text = String(param[param.index(after: equals)...])
                given[String(param[..<equals])] = (try? JSONValue(parsing: text)) ?? .string(text)
            }
            do {
                target = try ScheduleDefinition.pipelineTarget(path: file, params: given, knownKinds: FarmKinds.runnable.union(FarmKinds.planned), at: "--pipeline")
            } catch {
                throw ValidationError(error.description)
            }
        default:
            throw ValidationError("give exactly one of --kind K (a job) or --pipeline FILE")
        }
        let definition = ScheduleDefinition(
            name: name, cron: cron, timeZone: timing.timeZone, missed: try timing.policy(), grace: try timing.graceDuration(), target: target)
        do { _ = try definition.cronSchedule() } catch { throw ValidationError(error.description) }
        let farm = try global.makeFarm()
        let next = try await reportingErrors { try await ScheduleBook(farm: farm).add([definition]) }
        let zone = (try? definition.cronSchedule().timeZone) ?? TimeZone(identifier: "UTC")!
        print("\(name) (version \(definition.version)): next \(next[name].map { FiringFormat.text($0, zone: zone) } ?? "never")")
    }
}

struct ScheduleListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the farm's schedules with their next firing.")

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON (one object per schedule, as stored, with `next`).") var json = false

    func run() async throws {
        let farm = try global.makeFarm()
        let stored = try await reportingErrors { try await ScheduleBook(farm: farm).list() }
        if json {
            let items: [JSONValue] = stored.map { item in
                var object: [String: JSONValue] = ["name": .string(item.name)]
                if let definition = item.definition, case .object(let fields)? = try? JSONValue(parsing: definition.json) {
                    object = fields
                }
                if let problem = item.problem { object["problem"] = .string(problem) }
                if let next = item.next { object["next"] = .string(ISO8601DateFormatter().string(from: next)) }
                return .object(object)
            }
            printJSON(.array(items))
            return
        }
        if stored.isEmpty { print("no schedules (add one with `jobfarm schedule add` or `jobfarm schedule sync jobs/schedules.yaml`)") }
        for item in stored {
            guard let definition = item.definition else {
                print("\(item.name): unreadable: \(item.problem ?? "")")
                continue
            }
            let target: String
            switch definition.target {
            case .job(let kind, let queue, let tier, _): target = "job \(kind) on \(queue)" + (tier.map { "/\($0)" } ?? "")
            case .pipeline(let file, _, _, let queue, _): target = "pipeline \(file) (firings on \(queue))"
            }
            let zone = (try? definition.cronSchedule().timeZone) ?? TimeZone(identifier: "UTC")!
            let next = item.next.map { FiringFormat.text($0, zone: zone) } ?? "never"
            print("\(item.name): \"\(definition.cron)\" \(definition.timeZone), missed: \(definition.missed.rawValue) → \(target); next \(next); from \(definition.origin), version \(definition.version)")
        }
    }
}

struct ScheduleRemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Remove schedules: their pending firing jobs do nothing when they run.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Schedule names.") var names: [String]

    func run() async throws {
        let farm = try global.makeFarm()
        let removed = try await reportingErrors { try await ScheduleBook(farm: farm).remove(names) }
        print("removed \(removed) of \(names.count) schedule(s)")
        if removed < names.count { throw ExitCode(1) }
    }
}

struct ScheduleSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Make the farm's schedules what the files declare: a schedule file (jobs/schedules.yaml) or a pipeline file with its own `schedule:`; enqueue every next firing.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Schedule files and pipeline files (YAML).") var files: [String]

    func run() async throws {
        let known = FarmKinds.runnable.union(FarmKinds.planned)
        var declared: [(origin: String, definitions: [ScheduleDefinition])] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                throw CLIError(message: "\(file): cannot read it; check the path. Nothing was changed", exitCode: 1)
            }
            // A schedule file has a top-level `schedules:` list; anything else is read as a pipeline file.
            let isScheduleFile = text.split(separator: "\n").contains { $0.hasPrefix("schedules:") }
            do {
                if isScheduleFile {
                    let schedules = try ScheduleFile.load(path: file, knownKinds: known)
                    declared.append((file, try ScheduleDefinition.definitions(in: schedules, knownKinds: known)))
                } else {
                    declared.append((file, try ScheduleDefinition.definition(ofPipelineAt: file, knownKinds: known).map { [$0] } ?? []))
                }
            } catch {
                throw CLIError(message: "\(error)\nNothing was changed: fix the file and sync again", exitCode: 1)
            }
        }
        let farm = try global.makeFarm()
        let book = ScheduleBook(farm: farm)
        for (origin, definitions) in declared {
            let report = try await reportingErrors { try await book.sync(definitions, origin: origin) }
            var parts: [String] = []
            if !report.added.isEmpty { parts.append("added \(report.added.joined(separator: ", "))") }
            if !report.changed.isEmpty { parts.append("changed \(report.changed.joined(separator: ", "))") }
            if !report.removed.isEmpty { parts.append("removed \(report.removed.joined(separator: ", "))") }
            if !report.unchanged.isEmpty { parts.append("\(report.unchanged.count) unchanged") }
            print("\(origin): \(parts.isEmpty ? "no schedules" : parts.joined(separator: "; ")); \(report.firingsEnqueued) firing job(s) enqueued")
        }
    }
}
