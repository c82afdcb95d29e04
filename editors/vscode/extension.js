// Starts `lmc lsp` (the command in the `lmc.command` setting) for .lmp files and talks to it over stdio.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function serverOptions() {
  const [command, ...args] = vscode.workspace.getConfiguration("lmc").get("command", ["lmc", "lsp"]);
  return { command, args, transport: TransportKind.stdio };
}

async function start(context) {
  client = new LanguageClient(
    "lmc",
    "lmc",
    serverOptions(),
    {
      documentSelector: [{ language: "lmp" }],
      outputChannelName: "lmc",
    },
  );
  try {
    await client.start();
  } catch (err) {
    const shown = (vscode.workspace.getConfiguration("lmc").get("command") || []).join(" ");
    vscode.window.showErrorMessage(
      `lmc: could not start the language server with "${shown}" (${err.message}). ` +
        "Install lmc in the environment VS Code sees, or set lmc.command.",
    );
  }
}

async function activate(context) {
  context.subscriptions.push(
    vscode.commands.registerCommand("lmc.restartServer", async () => {
      if (client) {
        await client.stop();
      }
      await start(context);
    }),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration("lmc.command")) {
        await vscode.commands.executeCommand("lmc.restartServer");
      }
    }),
  );
  await start(context);
}

async function deactivate() {
  if (client) {
    await client.stop();
  }
}

module.exports = { activate, deactivate };
