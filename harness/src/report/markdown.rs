//! Markdown report, fit to paste into a merge-request comment.
