export class FormatError extends Error { constructor(public readonly file: string, message: string) { super(`${file}: ${message}`); this.name = "FormatError"; } }
