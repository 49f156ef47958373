import ArgumentParser
import Foundation
import JobQueue
import ModelStore
import RedisClient

/// `jobfarm dataset push|list`: .npy and CSV files stored in the farm, referenced as `farm:NAME` in payloads.
struct DatasetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset", abstract: "Store .npy and CSV datasets in the farm (use them as farm:NAME in payloads).",
        subcommands: [Push.self, List.self])

    static func store(_ global: GlobalOptions) throws -> DatasetStore {
        let configuration = try global.farmConfiguration()
        global.bootstrapLogging()
        return DatasetStore(client: RedisClient(configuration: configuration.redis, name: "cli-datasets"), namespace: configuration.namespace)
    }

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Push a .npy or CSV file (replaces an earlier dataset of the same name).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The .npy or .csv file.") var file: String
        @Option(help: "Dataset name (default: the file name without extension).") var name: String?

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read '\(file)'; check the path")
            }
            let datasetName = name ?? URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
            let store = try DatasetCommand.store(global)
            try await cliErrors {
                let record = try await store.push(name: datasetName, bytes: [UInt8](data), metadata: ["file": URL(fileURLWithPath: file).lastPathComponent])
                print("farm:\(record.name)  \(record.format)  \(record.bytes) bytes  sha256:\(record.sha256)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List stored datasets.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let store = try DatasetCommand.store(global)
            try await cliErrors {
                let records = try await store.list()
                if records.isEmpty { print("no datasets (push one with `jobfarm dataset push FILE`)") }
                for record in records {
                    print("farm:\(record.name)  \(record.format)  \(record.bytes) bytes  \(isoTime(record.createdAt))  \(record.sha256.prefix(12))\(record.metadata["job"].map { "  from job \($0)" } ?? "")")
                }
            }
        }
    }
}
