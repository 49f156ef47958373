import ArgumentParser
import ModelStore

extension ModelCommand {
    /// `model rollback NAME`: the alias back to the target it had before its last switch (a promotion's).
    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move an alias back to its previous target (kept by `promote`): `model rollback digits-mlp` (alias production); a second rollback undoes the first.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name.") var name: String
        @Option(help: "The alias to roll back.") var alias: String = "production"

        func run() async throws {
            let registry = try ModelCommand.registry(global)
            try await cliErrors {
                let (from, to) = try await registry.rollbackAlias(alias, name: name)
                print("\(name):\(alias) → \(to) (was \(from); `jobfarm model rollback \(name)` again returns to \(from))")
            }
        }
    }
}
