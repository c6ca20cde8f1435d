"""Label tables that would have answered silently wrong: each is read right or refused naming the row."""

import gzip

import numpy as np
import pytest

from xrayest import load_label_table


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_a_row_with_more_or_fewer_fields_than_the_header_is_refused(tmp_path):
    table = write(tmp_path / "t.csv", "path,label,patient\na.png,normal,1\nb.png,covid,2,extra\n")
    with pytest.raises(ValueError, match="row 3 has 4 fields but the header has 3"):
        load_label_table(table, "path", label_column="label", check_files=False)
    table = write(tmp_path / "t.csv", "path,label,patient\na.png,normal,1\nb.png,covid\n")
    with pytest.raises(ValueError, match="row 3 has 2 fields but the header has 3"):
        load_label_table(table, "path", label_column="label", check_files=False)


def test_one_image_listed_twice_with_different_labels_is_refused(tmp_path):
    table = write(tmp_path / "t.csv", "path,label\na.png,normal\nb.png,covid\na.png,covid\n")
    with pytest.raises(ValueError, match=r"rows 2 and 4 both list .*a.png with different labels"):
        load_label_table(table, "path", label_column="label", check_files=False)
    same = write(tmp_path / "s.csv", "path,label\na.png,normal\nb.png,covid\na.png,normal\n")
    assert len(load_label_table(same, "path", label_column="label", check_files=False).paths) == 3


def test_a_blank_findings_cell_is_not_no_finding(tmp_path):
    table = write(tmp_path / "t.csv", "path,findings\na.png,Effusion\nb.png,\nc.png,No Finding\n")
    with pytest.raises(ValueError, match="row 3: column 'findings' is blank; write 'No Finding'"):
        load_label_table(table, "path", label_column="findings", sep="|", none_label="No Finding", check_files=False)


def test_relative_paths_stay_inside_the_root(tmp_path):
    (tmp_path / "data").mkdir()
    table = write(tmp_path / "data" / "t.csv", "path,label\na.png,normal\n../secret.png,covid\n")
    with pytest.raises(ValueError, match="row 3: path '../secret.png' leads outside the table's root"):
        load_label_table(table, "path", label_column="label", check_files=False)
    inside = write(tmp_path / "data" / "u.csv", "path,label\nsub/../a.png,normal\n/abs/b.png,covid\n")
    t = load_label_table(inside, "path", label_column="label", check_files=False)
    assert t.paths[1] == "/abs/b.png"  # an absolute path is the user's explicit choice


def test_excel_cp1252_and_gzip_tables_read(tmp_path):
    text = "path,label,site\na.png,normal,Hôpital Café\nb.png,covid,Zürich\n"
    excel = write(tmp_path / "excel.csv", text, encoding="cp1252")
    t = load_label_table(excel, "path", label_column="label", check_files=False)
    assert t.y.tolist() == ["normal", "covid"]
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(text.encode("utf-8")))
    t = load_label_table(packed, "path", label_column="label", check_files=False)
    assert t.y.tolist() == ["normal", "covid"] and np.all([p.startswith(str(tmp_path)) for p in t.paths])
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="broken.csv.gz cannot be read"):
        load_label_table(broken, "path", label_column="label", check_files=False)
