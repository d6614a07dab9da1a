-- Reserved for issue 4 (monitoring views); filled in by that change.
SELECT 1;
