import Foundation
import PackagePlugin

/// Turns the target's `Scripts/*.lua` files into one generated Swift source (`EmbeddedLuaScripts`), so the
/// protocol's scripts live as plain `.lua` files other languages can load, and the built binary carries them
/// inside itself (no resource bundle beside it).
@main
struct EmbedLuaScripts: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let module = target as? SourceModuleTarget else { return [] }
        let files = module.sourceFiles(withSuffix: "lua").map(\.url).sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedLuaScripts.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) Lua scripts of \(target.name)",
                executable: try context.tool(named: "LuaEmbedder").url,
                arguments: [output.path] + files.map(\.path),
                inputFiles: files,
                outputFiles: [output])
        ]
    }
}
