// Notifications with buttons (error / warning / information messages), recorded so the
// extension-host tests can see what a person would see and press a button the way a person
// would (`choose`); VS Code offers no way to read or click a notification from an extension.
import * as vscode from "vscode";

export type NoticeLevel = "error" | "warning" | "info";

export interface Notice {
  id: number;
  level: NoticeLevel;
  message: string;
  actions: string[];
  at: number;
  /** what was chosen (undefined: dismissed, or not yet) */
  chosen?: string;
  /** Presses a button, as the person would. */
  choose(action: string | undefined): void;
  /** Resolves with the button pressed (undefined when dismissed). */
  readonly answer: Promise<string | undefined>;
}

const KEEP = 50;

export class Notices implements vscode.Disposable {
  private seq = 0;
  readonly recent: Notice[] = [];
  private readonly shown = new vscode.EventEmitter<Notice>();
  readonly onDidShow = this.shown.event;

  /** Shows a notification; `onChoice` runs with the button pressed (not when dismissed). */
  show(level: NoticeLevel, message: string, actions: string[] = [], onChoice?: (action: string) => unknown): Notice {
    let settle!: (a: string | undefined) => void;
    let settled = false;
    const answer = new Promise<string | undefined>((resolve) => (settle = resolve));
    const notice: Notice = {
      id: ++this.seq,
      level,
      message,
      actions,
      at: Date.now(),
      answer,
      choose: (a) => {
        if (settled) return;
        settled = true;
        notice.chosen = a;
        settle(a);
      },
    };
    const fn = level === "error" ? vscode.window.showErrorMessage : level === "warning" ? vscode.window.showWarningMessage : vscode.window.showInformationMessage;
    void Promise.resolve(fn(message, ...actions)).then((a) => notice.choose(a), () => notice.choose(undefined));
    void answer.then((a) => {
      if (a !== undefined && onChoice) void Promise.resolve(onChoice(a)).catch(() => undefined);
    });
    this.recent.push(notice);
    if (this.recent.length > KEEP) this.recent.splice(0, this.recent.length - KEEP);
    this.shown.fire(notice);
    return notice;
  }

  /** The last notice whose message matches. */
  find(match: RegExp): Notice | undefined {
    for (let i = this.recent.length - 1; i >= 0; i--) if (match.test(this.recent[i].message)) return this.recent[i];
    return undefined;
  }

  dispose(): void {
    this.shown.dispose();
  }
}
