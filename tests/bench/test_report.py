"""README's Performance section is rewritten from a run, between its markers only."""

from bench.report import BEGIN, END, update_readme


def test_the_run_replaces_only_what_stands_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{BEGIN}\n\nold table\n\n{END}\n\nafter\n")
    assert update_readme(readme, "| new | table |\n")
    assert readme.read_text() == f"# Title\n\nbefore\n\n{BEGIN}\n\n| new | table |\n\n{END}\n\nafter\n"
    assert update_readme(readme, "| newer |\n")  # again: the markers stay
    assert readme.read_text().count("newer") == 1 and "new | table" not in readme.read_text()


def test_a_readme_without_markers_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert not update_readme(readme, "| table |\n")
    assert readme.read_text() == "no markers\n"
